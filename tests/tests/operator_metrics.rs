//! The filter's metrics as Prometheus sees them (real Envoy's `/stats/prometheus`), and the
//! drift check: every metric the Grafana dashboard and the alert rules name exists in the real
//! poller's `/metrics` or the real Envoy's `/stats/prometheus`.

mod operator;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use operator::{
    alert_exprs, dashboard, dashboard_exprs, exposed_names, metric_names, prometheus_dir,
};
use serde_json::Value;
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{client, free_addr, location, wait_for};

/// Consul double, poller (with standalone redirects, so every family has samples) and Envoy.
struct Running {
    consul: ConsulDouble,
    poller: Poller,
    redirect: std::net::SocketAddr,
    envoy: Envoy,
}

async fn start() -> Result<Running> {
    let consul = ConsulDouble::start(vec![
        VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active),
        VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
    ])
    .await?;
    let redirect = free_addr()?;
    let poller =
        Poller::start(&consul.url(), &["--redirect-listen", &redirect.to_string()]).await?;
    let envoy = Envoy::start(EnvoyOptions::new(poller.addr)).await?;
    let http = client()?;
    let url = envoy.url("/v1/secret/data/x");
    wait_for("the first 307 through Envoy", Duration::from_secs(15), || async {
        location(&http, &url).await.ok().filter(|(s, _)| *s == 307)
    })
    .await?;
    Ok(Running { consul, poller, redirect, envoy })
}

async fn get(url: &str) -> Result<String> {
    Ok(client()?.get(url).send().await.with_context(|| format!("GET {url}"))?.text().await?)
}

/// The value of an unlabelled sample (`name{} 3` or `name 3`).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix("{}").unwrap_or(rest);
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filters_metrics_are_in_envoys_prometheus_stats() -> Result<()> {
    let r = start().await?;
    let prom = format!("http://{}/stats/prometheus", r.envoy.admin);
    // Request counters reach Envoy on the filter's next tick.
    let text =
        wait_for("a redirect counted in /stats/prometheus", Duration::from_secs(10), || async {
            let t = get(&prom).await.ok()?;
            (sample(&t, "vault_redirect_redirects").unwrap_or(0.0) >= 1.0).then_some(t)
        })
        .await?;
    for (name, kind) in [
        ("vault_redirect_redirects", "counter"),
        ("vault_redirect_proxied", "counter"),
        ("vault_redirect_no_active", "counter"),
        ("vault_redirect_bad_requests", "counter"),
        ("vault_redirect_pass_through", "counter"),
        ("vault_redirect_state_updates", "counter"),
        ("vault_redirect_poll_failures", "counter"),
        ("vault_redirect_refused_targets", "counter"),
        ("vault_redirect_state_age_ms", "gauge"),
        ("vault_redirect_state_version", "gauge"),
    ] {
        ensure!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) missing from /stats/prometheus"
        );
    }
    ensure!(sample(&text, "vault_redirect_redirects").unwrap_or(0.0) >= 1.0, "no redirect counted");
    ensure!(
        sample(&text, "vault_redirect_state_updates").unwrap_or(0.0) >= 1.0,
        "no state update counted"
    );
    let version = r.poller.state().await?.version as f64;
    ensure!(
        sample(&text, "vault_redirect_state_version") == Some(version),
        "state_version is not the poller's {version}"
    );

    // A request too long to redirect, and a failover: the counters and the version move.
    let long = format!("/v1/{}", "a".repeat(9 * 1024));
    let bad = client()?.get(r.envoy.url(&long)).send().await?.status().as_u16();
    ensure!(bad == 414, "a 9 KiB path got {bad}");
    r.consul.set_active("vault-b");
    let http = client()?;
    let url = r.envoy.url("/v1/secret/data/x");
    wait_for("the 307 to vault-b", Duration::from_secs(15), || async {
        location(&http, &url)
            .await
            .ok()
            .filter(|(_, l)| l.as_deref().is_some_and(|l| l.contains("127.0.0.3")))
    })
    .await?;
    let new_version = r.poller.state().await?.version as f64;
    let text = wait_for(
        "the new version and the 414 in /stats/prometheus",
        Duration::from_secs(15),
        || async {
            let t = get(&prom).await.ok()?;
            let counted = sample(&t, "vault_redirect_bad_requests").unwrap_or(0.0) >= 1.0;
            (sample(&t, "vault_redirect_state_version") == Some(new_version) && counted)
                .then_some(t)
        },
    )
    .await?;
    ensure!(
        sample(&text, "vault_redirect_bad_requests").unwrap_or(0.0) >= 1.0,
        "the 414 was not counted"
    );
    ensure!(
        sample(&text, "vault_redirect_state_updates").unwrap_or(0.0) >= 2.0,
        "the failover was not counted"
    );
    ensure!(
        sample(&text, "vault_redirect_state_age_ms").is_some_and(|a| a < 60_000.0),
        "state age: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_and_the_alert_rules_is_exported() -> Result<()> {
    let r = start().await?;
    // Fill the poller's labelled families: a standalone answer (Consul requests have happened).
    client()?.get(format!("http://{}/v1/sys/health", r.redirect)).send().await?;
    let poller = get(&format!("http://{}/metrics", r.poller.addr)).await?;
    let envoy = get(&format!("http://{}/stats/prometheus", r.envoy.admin)).await?;
    let mut exported = exposed_names(&poller);
    exported.extend(exposed_names(&envoy));
    // Prometheus makes `up` itself for every target.
    exported.insert("up".to_string());

    let rules = std::fs::read_to_string(prometheus_dir().join("alerts.yaml"))?;
    let d = dashboard()?;
    let mut used: Vec<(String, String)> = Vec::new();
    for (alert, expr) in alert_exprs(&rules) {
        used.extend(metric_names(&expr).into_iter().map(|m| (format!("alert {alert}"), m)));
    }
    let panels = dashboard_exprs(&d);
    ensure!(panels.len() >= 15, "only {} dashboard queries found", panels.len());
    for (panel, expr) in &panels {
        let names = metric_names(expr);
        ensure!(!names.is_empty(), "panel {panel:?} queries no metric: {expr}");
        used.extend(names.into_iter().map(|m| (format!("panel {panel:?}"), m)));
    }
    let missing: Vec<String> = used
        .iter()
        .filter(|(_, m)| !exported.contains(m))
        .map(|(w, m)| format!("{m} (in {w})"))
        .collect();
    ensure!(missing.is_empty(), "not exported by the poller or Envoy: {missing:#?}");
    // Both sides are covered, so the check is not vacuous.
    let names: BTreeSet<&str> = used.iter().map(|(_, m)| m.as_str()).collect();
    ensure!(
        names.contains("vault_redirect_active_node")
            && names.contains("vault_redirect_state_age_ms"),
        "{names:?}"
    );
    Ok(())
}

#[test]
fn the_dashboard_groups_panels_by_subsystem_and_explains_each() -> Result<()> {
    let d = dashboard()?;
    let panels = d["panels"].as_array().context("no panels")?;
    let rows: Vec<&str> =
        panels.iter().filter(|p| p["type"] == "row").filter_map(|p| p["title"].as_str()).collect();
    ensure!(rows.len() == 3, "rows: {rows:?}");
    for (row, subsystem) in rows.iter().zip(["Consul sync", "Poller API", "Envoy filter"]) {
        ensure!(row.starts_with(subsystem), "row {row:?} should be {subsystem}");
    }
    let mut current = "";
    let mut per_row: Vec<(String, usize)> = Vec::new();
    for p in panels {
        match p["type"].as_str() {
            Some("row") => {
                current = p["title"].as_str().unwrap_or_default();
                per_row.push((current.to_string(), 0));
            }
            Some("text") => {
                let blurb = p["options"]["content"].as_str().unwrap_or_default();
                ensure!(blurb.len() > 100, "the blurb under {current:?} says too little: {blurb}");
            }
            _ => {
                let title = p["title"].as_str().unwrap_or_default();
                let desc = p["description"].as_str().unwrap_or_default();
                ensure!(
                    desc.contains("Why it matters"),
                    "panel {title:?} does not say why it matters: {desc:?}"
                );
                ensure!(
                    p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                    "panel {title:?} has no query"
                );
                if let Some(last) = per_row.last_mut() {
                    last.1 += 1;
                }
            }
        }
    }
    ensure!(per_row.iter().all(|(_, n)| *n >= 3), "every subsystem needs its panels: {per_row:?}");
    let uids: Vec<&Value> = vec![&d["uid"], &d["title"]];
    ensure!(uids.iter().all(|v| v.is_string()), "dashboard without uid or title");
    Ok(())
}
