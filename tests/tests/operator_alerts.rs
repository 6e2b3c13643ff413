//! The Prometheus alert rules (deploy/prometheus/alerts.yaml) through the real promtool:
//! `check rules`, the unit tests of every alert firing and not firing (`test rules`), a
//! runbook entry per alert, and `check metrics` over the real poller's /metrics.
//!
//! promtool comes from Debian's `prometheus` package (scripts/setup.sh installs it); without
//! it these tests fail and say so.

mod operator;

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use operator::{alert_exprs, prometheus_dir, promtool};
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{client, free_addr, workspace_root};

fn rules() -> Result<String> {
    let path = prometheus_dir().join("alerts.yaml");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

#[test]
fn promtool_accepts_the_alert_rules() -> Result<()> {
    let (ok, out) = promtool(&prometheus_dir(), &["check", "rules", "alerts.yaml"], None)?;
    ensure!(ok, "promtool check rules failed:\n{out}");
    let alerts = alert_exprs(&rules()?);
    // The reader the drift test relies on found every rule promtool found.
    ensure!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "promtool: {out}\nread: {alerts:?}"
    );
    let names: BTreeSet<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "VaultRedirectNoActiveNode",
        "VaultRedirectStateStale",
        "VaultRedirectConsulErrors",
        "VaultRedirectSeveralActiveNodes",
        "VaultRedirectPollerDown",
        "VaultRedirectFailoverFlapping",
        "VaultRedirectFilterNotUpdated",
    ] {
        ensure!(names.contains(wanted), "no alert {wanted} in alerts.yaml: {names:?}");
    }
    Ok(())
}

#[test]
fn every_alert_fires_and_stays_quiet_in_promtools_unit_tests() -> Result<()> {
    let dir = prometheus_dir().join("tests");
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no promtool unit tests in {}", dir.display());
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = promtool(&dir, &args, None)?;
    ensure!(ok, "promtool test rules failed:\n{out}");
    // Each alert is tested both ways: expected to fire somewhere, and expected silent somewhere.
    let tests: String =
        files.iter().map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default()).collect();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for (alert, _) in alert_exprs(&rules()?) {
        let cases: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == format!("alertname: {alert}"))
            .filter_map(|(i, _)| lines.get(i + 1).copied())
            .collect();
        ensure!(
            cases.contains(&"exp_alerts: []"),
            "{alert} has no unit test where it must not fire"
        );
        ensure!(cases.contains(&"exp_alerts:"), "{alert} has no unit test where it fires");
    }
    Ok(())
}

#[test]
fn every_alert_has_a_runbook_entry() -> Result<()> {
    let path = workspace_root().join("docs/operations.md");
    let doc =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let alerts_section =
        doc.split("\n## Alerts").nth(1).context("docs/operations.md has no `## Alerts` section")?;
    let alerts_section = alerts_section.split("\n## ").next().unwrap_or_default();
    let yaml = rules()?;
    for (alert, _) in alert_exprs(&yaml) {
        let heading = format!("\n### {alert}\n");
        let entry = alerts_section
            .split(&heading)
            .nth(1)
            .with_context(|| format!("no runbook entry `### {alert}`"))?;
        let entry = entry.split("\n### ").next().unwrap_or_default();
        for part in ["**Means**", "**Confirm**", "**Likely causes**", "**Do**"] {
            ensure!(entry.contains(part), "the runbook entry for {alert} lacks {part}");
        }
        let anchor = format!("docs/operations.md#{}", alert.to_lowercase());
        ensure!(yaml.contains(&anchor), "{alert}'s runbook annotation should be {anchor}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_to_lint_in_the_real_pollers_metrics() -> Result<()> {
    let consul = ConsulDouble::start(vec![
        VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active),
        VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
    ])
    .await?;
    let redirect = free_addr()?;
    let poller =
        Poller::start(&consul.url(), &["--redirect-listen", &redirect.to_string()]).await?;
    let http = client()?;
    // Fill every labelled family: a standalone redirect, a failover.
    http.get(format!("http://{redirect}/v1/sys/health")).send().await?;
    consul.set_active("vault-b");
    vault_redirect_e2e::wait_for("the failover", std::time::Duration::from_secs(15), || async {
        (poller.state().await.ok()?.active?.node == "vault-b").then_some(())
    })
    .await?;
    let text = http
        .get(format!("http://{}/metrics", poller.addr))
        .header("accept", "text/plain")
        .send()
        .await?
        .text()
        .await?;
    for family in [
        "vault_redirect_redirect_responses_total",
        "vault_redirect_consul_requests_total",
        "vault_redirect_active_node",
    ] {
        ensure!(text.contains(&format!("# TYPE {family} ")), "{family} missing from:\n{text}");
    }
    let (ok, out) = promtool(&prometheus_dir(), &["check", "metrics"], Some(&text))?;
    ensure!(ok && out.trim().is_empty(), "promtool check metrics:\n{out}\nover:\n{text}");
    Ok(())
}
