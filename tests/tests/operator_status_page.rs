//! The poller's status page in a real browser (headless Chromium): it loads, shows the active
//! node and the nodes Consul reports, and after failovers shows the new node and the timeline
//! without being reloaded. Keeps a screenshot in target/e2e-logs/status-page.png (and, with
//! VAULT_REDIRECT_SCREENSHOT=path, there too: that is how docs/status-page.png was made).

mod operator;

use std::time::Duration;

use anyhow::{ensure, Result};
use operator::Browser;
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{client, target_dir, wait_for};

fn cluster() -> Vec<VaultNode> {
    vec![
        VaultNode::new("vault-a", "10.20.0.11", 8200, Role::Active),
        VaultNode::new("vault-b", "10.20.0.12", 8200, Role::Standby),
        VaultNode::new("vault-c", "10.20.0.13", 8200, Role::Standby),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_failovers_without_a_reload() -> Result<()> {
    let consul = ConsulDouble::start(cluster()).await?;
    let poller = Poller::start(&consul.url(), &[]).await?;
    let browser = Browser::start().await?;
    browser.goto(&format!("http://{}/", poller.addr)).await?;

    browser.wait_text("active", "vault-a", |t| t == "vault-a").await?;
    browser.wait_text("health", "OK", |t| t == "OK").await?;
    let detail = browser.text("active-detail").await?.unwrap_or_default();
    ensure!(detail == "10.20.0.11:8200", "active detail: {detail:?}");
    let rows = browser
        .eval("return [...document.querySelectorAll('#nodes tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        .await?;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows)?;
    ensure!(rows.len() == 3, "node rows: {rows:?}");
    ensure!(
        rows[0][0] == "vault-a"
            && rows[0][3].contains("active")
            && rows[0][4] == "passing"
            && rows[0][6] == "active",
        "{rows:?}"
    );
    ensure!(
        rows[1][1] == "10.20.0.12" && rows[1][2] == "8200" && rows[1][6].is_empty(),
        "{rows:?}"
    );
    // Between updates the page parks on /v1/active's long-poll: the poller counts it.
    let status_url = format!("http://{}/v1/status", poller.addr);
    wait_for("the page's long-poll", Duration::from_secs(20), || async {
        let s: serde_json::Value =
            client().ok()?.get(&status_url).send().await.ok()?.json().await.ok()?;
        (s["longpoll_waiters"] == 1).then_some(())
    })
    .await?;
    let shown: u64 = browser.text("waiters").await?.unwrap_or_default().parse()?;
    ensure!(shown <= 1, "waiters shown: {shown}");

    // Anything a reload would wipe out.
    browser.eval("window.__notReloaded = 'yes'; return null;").await?;

    // A failover through an election: no node tagged active for a moment, then vault-b.
    consul.update(|nodes| nodes.iter_mut().for_each(|n| n.role = Role::Standby));
    browser.wait_text("active", "no active node", |t| t == "no active node").await?;
    browser.wait_text("health", "CRITICAL", |t| t == "CRITICAL").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    consul.set_active("vault-b");
    browser.wait_text("active", "vault-b", |t| t == "vault-b").await?;
    let timeline =
        browser.wait_text("timeline", "the gap", |t| t.contains("without an active node")).await?;
    ensure!(timeline.contains("→ vault-b (10.20.0.12:8200)"), "timeline: {timeline}");

    // A direct handover, then vault-b's node sealed and vault-c taking over.
    tokio::time::sleep(Duration::from_millis(700)).await;
    consul.set_active("vault-c");
    browser.wait_text("active", "vault-c", |t| t == "vault-c").await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    consul.update(|nodes| {
        nodes[1].sealed = true;
        nodes[2].role = Role::Standby;
    });
    browser.wait_text("active", "no active node", |t| t == "no active node").await?;
    tokio::time::sleep(Duration::from_millis(900)).await;
    consul.set_active("vault-a");
    browser.wait_text("active", "vault-a again", |t| t == "vault-a").await?;

    let items = browser
        .eval("return [...document.querySelectorAll('#timeline li')].map(li => li.textContent)")
        .await?;
    let items: Vec<String> = serde_json::from_value(items)?;
    ensure!(items.len() == 6, "timeline items: {items:#?}");
    ensure!(
        items[0].contains("→ vault-a") && items[0].contains("without an active node"),
        "{items:#?}"
    );
    ensure!(items[2].contains("→ vault-c") && !items[2].contains("without"), "{items:#?}");
    ensure!(items[4].contains("no active node") && items[4].contains("tagged"), "{items:#?}");
    let sealed = browser
        .eval("return [...document.querySelectorAll('#nodes tbody tr')].find(r => r.cells[0].textContent === 'vault-b').cells[4].textContent")
        .await?;
    ensure!(sealed == "critical", "vault-b's sealed check shows {sealed}");
    let not_reloaded = browser.eval("return window.__notReloaded || null").await?;
    ensure!(not_reloaded == "yes", "the page was reloaded");

    let png = browser.screenshot().await?;
    ensure!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a screenshot: {} bytes",
        png.len()
    );
    let dir = target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("status-page.png"), &png)?;
    if let Some(path) = std::env::var_os("VAULT_REDIRECT_SCREENSHOT") {
        std::fs::write(path, &png)?;
    }
    Ok(())
}
