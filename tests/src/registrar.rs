//! A registrar that mirrors a real OpenBao cluster into the Consul double the way Vault's
//! Consul service registration keeps Consul up to date (vault: serviceregistration/consul/
//! consul_service_registration.go; the "What Vault registers in Consul" section of the API
//! facts). OpenBao removed that registration (openbao PR #167), so this stands in for it and
//! lets the poller's Consul source follow real elections with their real timing.
//!
//! Like Vault, each node is registered on its own: service `vault`, ID
//! `vault:<host>:<port>` and Address/Port from the node's `api_addr`, tag `active` or `standby`
//! (`performance-standby` instead of `standby`) plus `initialized`, and the "Vault Sealed
//! Status" TTL check, passing while unsealed. Vault re-tags at once on an active-state change
//! and updates the check at once on a seal-state change; here every node's `sys/health` is
//! probed every few milliseconds and a change is written to the double at once. A node that
//! stops answering keeps its last tags, as Vault's registration does when its process dies,
//! and its check turns critical once the check's TTL has passed without a heartbeat.
//!
//! It owns the probing tasks and the mapping from `sys/health` to a registration (a pure
//! function, [`registration`]). It never decides anything the poller decides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::task::JoinHandle;
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};

use crate::openbao::{probe_health, Health, OpenBaoCluster};

/// How the registrar probes.
#[derive(Clone, Debug)]
pub struct RegistrarOptions {
    /// Pause between two probes of one node.
    pub interval: Duration,
    /// How long one probe may take; a slower node counts as not answering this round.
    pub probe_timeout: Duration,
    /// The sealed check's TTL (Vault's `check_timeout`, default 5 s): how long a node that no
    /// longer answers keeps a passing check.
    pub check_ttl: Duration,
}

impl Default for RegistrarOptions {
    fn default() -> Self {
        RegistrarOptions {
            interval: Duration::from_millis(10),
            probe_timeout: Duration::from_millis(500),
            check_ttl: Duration::from_secs(5),
        }
    }
}

/// The Consul double, kept in step with a real cluster until dropped.
pub struct Registrar {
    consul: Arc<ConsulDouble>,
    tasks: Vec<JoinHandle<()>>,
    changes: Arc<AtomicU64>,
}

impl Drop for Registrar {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Registrar {
    /// Probes every node once, starts the Consul double with what it saw, and keeps it in
    /// step from then on.
    pub async fn start(cluster: &OpenBaoCluster, opts: RegistrarOptions) -> Result<Registrar> {
        let http = cluster.http_builder()?.build()?;
        let mut initial = Vec::new();
        for node in cluster.nodes() {
            let url = node.url("/v1/sys/health");
            let seen = probe(&http, &url, opts.probe_timeout).await;
            let unknown = VaultNode {
                sealed: true,
                initialized: false,
                ..VaultNode::new(&node.name, &node.ip.to_string(), node.api_port, Role::Standby)
            };
            let first = registration(&unknown, seen.as_ref(), Duration::ZERO, opts.check_ttl);
            initial.push((first, url));
        }
        let consul =
            Arc::new(ConsulDouble::start(initial.iter().map(|(n, _)| n.clone()).collect()).await?);
        let changes = Arc::new(AtomicU64::new(0));
        let tasks = initial
            .into_iter()
            .map(|(node, url)| {
                let mirror = Mirror {
                    consul: consul.clone(),
                    http: http.clone(),
                    url,
                    opts: opts.clone(),
                    changes: changes.clone(),
                };
                tokio::spawn(mirror.run(node))
            })
            .collect();
        Ok(Registrar { consul, tasks, changes })
    }

    /// The Consul double the cluster is registered in.
    pub fn consul(&self) -> &ConsulDouble {
        &self.consul
    }

    /// The double's URL, for the poller's `--consul-addr`.
    pub fn url(&self) -> String {
        self.consul.url()
    }

    /// How many registration changes were written so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }
}

/// One node's probe loop.
struct Mirror {
    consul: Arc<ConsulDouble>,
    http: reqwest::Client,
    url: String,
    opts: RegistrarOptions,
    changes: Arc<AtomicU64>,
}

impl Mirror {
    async fn run(self, mut current: VaultNode) {
        let mut last_answer = Instant::now();
        loop {
            let seen = probe(&self.http, &self.url, self.opts.probe_timeout).await;
            if seen.is_some() {
                last_answer = Instant::now();
            }
            let next =
                registration(&current, seen.as_ref(), last_answer.elapsed(), self.opts.check_ttl);
            if next != current {
                self.consul.update(|nodes| {
                    for n in nodes.iter_mut().filter(|n| n.node == next.node) {
                        *n = next.clone();
                    }
                });
                self.changes.fetch_add(1, Ordering::SeqCst);
                current = next;
            }
            tokio::time::sleep(self.opts.interval).await;
        }
    }
}

async fn probe(http: &reqwest::Client, url: &str, timeout: Duration) -> Option<Health> {
    tokio::time::timeout(timeout, probe_health(http, url)).await.ok()?.ok()
}

/// What Vault's registration of a node looks like after `seen` (its `sys/health` answer;
/// `None` when it gave none), given its registration before and how long it has not
/// answered.
pub fn registration(
    before: &VaultNode,
    seen: Option<&Health>,
    silent_for: Duration,
    check_ttl: Duration,
) -> VaultNode {
    let mut next = before.clone();
    let Some(health) = seen else {
        // The process is gone or hung: nobody re-tags it or heartbeats its TTL check.
        next.sealed = before.sealed || silent_for >= check_ttl;
        return next;
    };
    let flag = |name: &str, default: bool| health.body[name].as_bool().unwrap_or(default);
    (next.role, next.sealed, next.initialized) = match health.code {
        200 => (Role::Active, false, true),
        429 => (Role::Standby, false, true),
        473 => (Role::PerfStandby, false, true),
        // Not initialised: sealed too (the check is critical), and no `initialized` tag.
        501 => (Role::Standby, true, false),
        // Sealed (503), or a code this registrar does not model (472, a DR secondary): a
        // node that is not active is tagged standby, its check follows its seal status.
        _ => (Role::Standby, flag("sealed", health.code == 503), flag("initialized", true)),
    };
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> VaultNode {
        VaultNode::new("bao-0", "127.0.0.2", 8200, Role::Standby)
    }

    fn health(code: u16, body: serde_json::Value) -> Health {
        Health { code, body }
    }

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn a_node_answering_200_is_tagged_active_and_passes_its_check() {
        let next = registration(&node(), Some(&health(200, json!({}))), Duration::ZERO, TTL);
        assert_eq!((next.role, next.sealed, next.initialized), (Role::Active, false, true));
        assert_eq!(next.tags(), ["active", "initialized"]);
    }

    #[test]
    fn a_sealed_active_node_becomes_a_standby_with_a_critical_check() {
        let active = VaultNode { role: Role::Active, ..node() };
        let body = json!({"initialized": true, "sealed": true, "standby": true});
        let next = registration(&active, Some(&health(503, body)), Duration::ZERO, TTL);
        assert_eq!((next.role, next.sealed, next.initialized), (Role::Standby, true, true));
    }

    #[test]
    fn an_uninitialised_node_has_no_initialized_tag_and_a_critical_check() {
        let next = registration(&node(), Some(&health(501, json!({}))), Duration::ZERO, TTL);
        assert_eq!((next.sealed, next.initialized), (true, false));
        assert_eq!(next.tags(), ["standby"]);
    }

    #[test]
    fn a_silent_node_keeps_its_tags_until_the_check_ttl_passes() {
        let active = VaultNode { role: Role::Active, ..node() };
        let within = registration(&active, None, Duration::from_secs(4), TTL);
        assert_eq!((within.role, within.sealed), (Role::Active, false));
        let after = registration(&active, None, TTL, TTL);
        assert_eq!((after.role, after.sealed), (Role::Active, true));
        // Answering again brings the check back at once.
        let back = registration(&after, Some(&health(429, json!({}))), Duration::ZERO, TTL);
        assert_eq!((back.role, back.sealed), (Role::Standby, false));
    }
}
