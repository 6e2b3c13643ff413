//! The health document of `/health` and `/vault-redirector-health` (vault-redirector's fields,
//! plus the source of truth and what is wrong): pure, from a snapshot and the fixed facts,
//! with no HTTP. `problems` is the one list of what is wrong, shared with the status document.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use vault_redirect_core::HostChoice;

use crate::context::Info;
use crate::source::SourceKind;
use crate::state::{iso8601, Snapshot};

/// The health document and whether it is healthy.
pub fn health_document(
    snapshot: &Snapshot,
    info: &Info,
    now: Instant,
) -> (bool, serde_json::Value) {
    let doc = snapshot.doc_at(now);
    let active_vault = doc.active.as_ref().map(|a| {
        let host = match info.policy.host {
            HostChoice::Address => &a.address,
            HostChoice::Node => &a.node,
        };
        let port = info.policy.port.unwrap_or(a.port);
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    });
    let problems = problems(snapshot, info, now);
    let healthy = doc.active.is_some();
    let body = json!({
        "healthy": healthy,
        "application": "vault-redirect-poller",
        "source": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        // vault-redirector's field (its `source` is the program, above), for Consul only.
        "consul_host_port": (info.source.kind == SourceKind::Consul).then_some(&info.source.endpoint),
        "source_of_truth": info.source.kind.name(),
        "source_endpoint": info.source.endpoint,
        "active_vault": active_vault,
        "last_consul_poll": doc.last_consul_ok_unix_ms.map(iso8601),
        "state_version": doc.version,
        "consul_index": doc.consul_index,
        "age_ms": doc.age_ms,
        "active_candidates": snapshot.candidates,
        "problems": problems,
        // What the source last saw of each node: for the vault source, each node's last
        // sys/health code, its latency and the error reaching it.
        "nodes": snapshot.nodes.iter().map(|n| json!({
            "node": n.node,
            "checks": n.checks.iter().map(|c| (c.name.clone(), json!(c.status))).collect::<serde_json::Map<_, _>>(),
            "latency_ms": n.latency_ms,
            "error": n.error,
            "active": n.active,
        })).collect::<Vec<_>>(),
    });
    (healthy, body)
}

/// What is wrong, in words, as `/health`, the status page and `status` list it.
pub fn problems(snapshot: &Snapshot, info: &Info, now: Instant) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    let source = snapshot.source.display();
    if let Some(reason) = &snapshot.doc.reason {
        problems.push(format!("no active Vault node: {reason}"));
    }
    if let Some(err) = &snapshot.source_error {
        if snapshot.doc.active.is_some() {
            let left =
                snapshot.age(now).map(|a| info.max_stale.saturating_sub(a)).unwrap_or_default();
            problems.push(format!(
                "{source} is failing ({err}); serving the last known active node for up to {} more",
                crate::duration::display(Duration::from_secs(left.as_secs()))
            ));
        } else {
            problems.push(format!("{source} is failing: {err}"));
        }
    }
    if let (true, Some(first)) = (snapshot.candidates.len() > 1, snapshot.candidates.first()) {
        problems.push(format!(
            "{} nodes qualify as active ({}); serving {first}",
            snapshot.candidates.len(),
            snapshot.candidates.join(", "),
        ));
    }
    for refused in &snapshot.refused_targets {
        problems.push(format!("refused redirect target {refused}"));
    }
    problems.extend(snapshot.source_problems.iter().cloned());
    problems
}
