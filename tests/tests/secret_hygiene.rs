//! Secrets never leak: the Consul ACL token given to the poller never appears in its logs (at
//! trace level), its metrics, health, state or status documents, or its error bodies, whether
//! Consul accepts the token or refuses it.

mod common;

use std::time::Duration;

use vault_redirect_doubles::ConsulDouble;
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{client, free_addr};

const TOKEN: &str = "3f1e9c44-never-log-this-acl-token";

async fn every_document(poller: &Poller) -> anyhow::Result<String> {
    let http = client()?;
    let mut all = String::new();
    for path in [
        "/v1/active",
        "/v1/active?index=x",
        "/health",
        "/vault-redirector-health",
        "/metrics",
        "/v1/status",
        "/",
    ] {
        let r = http.get(format!("http://{}{path}", poller.addr)).send().await?;
        all.push_str(&r.text().await?);
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consul_token_is_never_logged_served_or_reflected() -> anyhow::Result<()> {
    // Consul accepts the token.
    let consul = ConsulDouble::start(common::three_nodes()).await?;
    consul.require_token(TOKEN);
    let env = [("CONSUL_HTTP_TOKEN", TOKEN.to_string()), ("RUST_LOG", "trace".to_string())];
    let poller =
        Poller::start_with_env(&consul.url(), free_addr()?, &["--log-level", "trace"], &env)
            .await?;
    let state = poller.state().await?;
    assert_eq!(
        state.active.map(|a| a.node).as_deref(),
        Some("vault-a"),
        "the token must have been sent to Consul"
    );
    consul.set_active("vault-b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = every_document(&poller).await?;
    assert!(!served.contains(TOKEN), "a document served the token");
    let log_path = poller.proc.log_path().to_path_buf();
    poller.proc.stop(Duration::from_secs(5)).await?;
    let log = std::fs::read_to_string(&log_path)?;
    assert!(log.lines().count() > 5, "trace logging produced almost nothing: {log}");
    assert!(!log.contains(TOKEN), "the token is in the poller's trace log");

    // Consul refuses the token: the error paths must not echo it either.
    let refusing = ConsulDouble::start(common::three_nodes()).await?;
    refusing.require_token("some-other-token");
    let poller =
        Poller::start_with_env(&refusing.url(), free_addr()?, &["--log-level", "trace"], &env)
            .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = every_document(&poller).await?;
    assert!(!served.contains(TOKEN), "an error document served the token");
    let log_path = poller.proc.log_path().to_path_buf();
    poller.proc.stop(Duration::from_secs(5)).await?;
    let log = std::fs::read_to_string(&log_path)?;
    assert!(
        log.contains("403") || log.to_lowercase().contains("acl"),
        "the refusal was not logged: {log}"
    );
    assert!(!log.contains(TOKEN), "the token is in the poller's log after a refusal");
    Ok(())
}
