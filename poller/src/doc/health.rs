//! The health document of `/health` and `/vault-redirector-health` (vault-redirector's fields,
//! plus why): pure, from a snapshot and the fixed facts, with no HTTP.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use vault_redirect_core::HostChoice;

use crate::context::Info;
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
    let mut problems: Vec<String> = Vec::new();
    if let Some(reason) = &doc.reason {
        problems.push(format!("no active Vault node: {reason}"));
    }
    if let Some(err) = &snapshot.consul_error {
        if doc.active.is_some() {
            let left =
                snapshot.age(now).map(|a| info.max_stale.saturating_sub(a)).unwrap_or_default();
            problems.push(format!(
                "Consul is failing ({err}); serving the last known active node for up to {} more",
                crate::duration::display(Duration::from_secs(left.as_secs()))
            ));
        } else {
            problems.push(format!("Consul is failing: {err}"));
        }
    }
    if snapshot.candidates.len() > 1 {
        problems.push(format!(
            "{} nodes qualify as active ({}); serving {} (newest registration)",
            snapshot.candidates.len(),
            snapshot.candidates.join(", "),
            snapshot.candidates[0]
        ));
    }
    for refused in &snapshot.refused_targets {
        problems.push(format!("refused redirect target {refused}"));
    }
    if !snapshot.known_leader {
        problems.push("Consul reports no known leader (stale read)".to_string());
    }
    let healthy = doc.active.is_some();
    let body = json!({
        "healthy": healthy,
        "application": "vault-redirect-poller",
        "source": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "consul_host_port": info.consul_host_port,
        "active_vault": active_vault,
        "last_consul_poll": doc.last_consul_ok_unix_ms.map(iso8601),
        "state_version": doc.version,
        "consul_index": doc.consul_index,
        "age_ms": doc.age_ms,
        "active_candidates": snapshot.candidates,
        "problems": problems,
    });
    (healthy, body)
}
