//! The `vault` source: the active node as Vault itself says it, from every node's
//! `GET /v1/sys/health` probed at once on a fixed interval, with `GET /v1/sys/leader` for the
//! active node's `api_addr` (the `Location` Vault's own standbys redirect to), for the Raft
//! index versions are built from, and, while no node answers 200, for what the standbys know.
//!
//! - `health`: one node's answers, classified (pure).
//! - `decide`: the round's verdict and its index (pure).
//! - `client`: the HTTP probes, TLS from Vault's own environment names.
//! - `round`: one probe round over every node at once.
//! - `settings`: its flags (`VaultArgs` in `config`) read into nodes and TLS.
//! - this module: the loop, a round every `--vault-probe-interval`, judged and published as
//!   a reading (Vault answered) or an error (the poller cannot see Vault); it remembers
//!   between rounds each node's `api_addr`, the node served and the round index.
//!
//! It never redirects to a node whose `sys/health` did not answer 200 within the probe
//! timeout, never talks to Vault but through `sys/health` and `sys/leader` (unauthenticated,
//! no token ever sent), and never writes the state but through its `Publisher`.

pub mod client;
pub mod decide;
pub mod health;
pub mod round;
pub mod settings;

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use client::ProbeClient;
use decide::{judge, round_index, Endpoint, NodeRound, Verdict};
use health::Health;
use round::{probe_round, Measured};

use crate::config::{Config, ConfigError};
use crate::source::{Publisher, Reading, Source, SourceInfo, SourceKind, SourceLoop};
use crate::state::{NodeCheck, NodeStatus};

/// The vault source, built and checked, not yet running.
pub struct VaultSource {
    client: ProbeClient,
    nodes: Vec<Endpoint>,
    interval: Duration,
}

impl VaultSource {
    /// Checks the vault flags and builds the probe client (reading the TLS files).
    pub fn new(config: &Config) -> Result<VaultSource, ConfigError> {
        let args = &config.vault;
        Ok(VaultSource {
            nodes: settings::endpoints(args)?,
            client: ProbeClient::new(&settings::tls(args), args.vault_probe_timeout)?,
            interval: args.vault_probe_interval,
        })
    }
}

impl Source for VaultSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: SourceKind::Vault,
            endpoint: self.nodes.iter().map(Endpoint::url).collect::<Vec<_>>().join(", "),
            watching: format!(
                "sys/health of {} nodes every {}",
                self.nodes.len(),
                crate::duration::display(self.interval)
            ),
        }
    }

    fn run(self: Box<Self>, out: Publisher, stop: watch::Receiver<bool>) -> SourceLoop {
        Box::pin(self.probe_loop(out, stop))
    }
}

/// The status page's row for one node after a round.
fn row(
    node: &NodeRound,
    measured: &Measured,
    api_addr: Option<&Endpoint>,
    candidates: &[String],
    served: Option<&str>,
) -> NodeStatus {
    let name = node.probe.authority();
    let via = api_addr.unwrap_or(&node.probe);
    let status = match (measured.probe.code, &node.health) {
        (Some(code), Health::Unreachable(_)) => format!("{code} (not Vault's answer)"),
        (Some(code), h) => format!("{code} {}", h.name().replace('_', " ")),
        (None, _) => "no answer".to_string(),
    };
    NodeStatus {
        node: name.clone(),
        address: via.host.clone(),
        port: via.port,
        labels: api_addr.iter().map(|a| format!("api_addr={}", a.url())).collect(),
        checks: vec![NodeCheck {
            name: "sys/health".into(),
            status,
            ok: node.health == Health::Active,
        }],
        latency_ms: Some(measured.probe.latency.as_millis().min(u128::from(u64::MAX)) as u64),
        error: match &node.health {
            Health::Unreachable(why) => Some(why.clone()),
            _ => None,
        },
        candidate: candidates.contains(&name),
        active: served == Some(name.as_str()),
    }
}

/// The status page's rows after a round, with each node's `api_addr` as known now.
fn rows(
    round: &[NodeRound],
    measured: &[Measured],
    api_addrs: &[Option<Endpoint>],
    candidates: &[String],
    served: Option<&str>,
) -> Vec<NodeStatus> {
    round
        .iter()
        .zip(measured)
        .zip(api_addrs)
        .map(|((n, m), api)| row(n, m, api.as_ref(), candidates, served))
        .collect()
}

impl VaultSource {
    async fn probe_loop(self, out: Publisher, mut stop: watch::Receiver<bool>) {
        let mut api_addrs: Vec<Option<Endpoint>> = vec![None; self.nodes.len()];
        let mut served: Option<String> = None;
        let mut index: u64 = 0;
        let mut blind_logged = false;
        let mut last_states: Vec<&'static str> = vec![""; self.nodes.len()];
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Instant::now();
            let pairs: Vec<(Endpoint, Option<Endpoint>)> =
                self.nodes.iter().cloned().zip(api_addrs.iter().cloned()).collect();
            let Some((round, measured)) =
                out.expire_while(probe_round(&self.client, &pairs), &mut stop).await
            else {
                return;
            };
            let now = Instant::now();
            for (i, (node, m)) in round.iter().zip(&measured).enumerate() {
                out.metrics().vault_probe(
                    &node.probe.authority(),
                    node.health.name(),
                    m.probe.latency.as_secs_f64(),
                );
                let state = node.health.name();
                if last_states[i] != state {
                    match &node.health {
                        Health::Unreachable(why) => {
                            log::warn!("vault node {}: {why}", node.probe.url())
                        }
                        _ => log::info!(
                            "vault node {}: {} ({} in {}ms)",
                            node.probe.url(),
                            state.replace('_', " "),
                            m.probe.code.unwrap_or_default(),
                            m.probe.latency.as_millis()
                        ),
                    }
                    last_states[i] = state;
                }
            }
            match judge(&round, served.as_deref()) {
                Verdict::Known { active, reason, candidates, problems } => {
                    if blind_logged {
                        log::info!("vault: the nodes answer again");
                        blind_logged = false;
                    }
                    if candidates.len() > 1 {
                        out.metrics().vault_multiple_active.inc();
                    }
                    if let Some(chosen) = &active {
                        if let Some(i) =
                            self.nodes.iter().position(|n| n.authority() == chosen.node.node)
                        {
                            if chosen.api_addr.is_some() {
                                api_addrs[i] = chosen.api_addr.clone();
                            }
                        }
                    }
                    index =
                        round_index(index, &round, active.as_ref().map(|c| c.node.node.as_str()));
                    served = active.as_ref().map(|c| c.node.node.clone());
                    let nodes = rows(&round, &measured, &api_addrs, &candidates, served.as_deref());
                    out.reading(
                        Reading {
                            index,
                            index_offset: 0,
                            scheme: active.as_ref().map(|c| c.scheme),
                            active: active.map(|c| c.node),
                            reason,
                            candidates,
                            refused_targets: Vec::new(),
                            nodes,
                            problems,
                        },
                        now,
                    );
                }
                Verdict::Blind(why) => {
                    if blind_logged {
                        log::debug!("vault: still cannot see the cluster: {why}");
                    } else {
                        log::warn!("vault: cannot see the cluster: {why}");
                        blind_logged = true;
                    }
                    let nodes = rows(&round, &measured, &api_addrs, &[], served.as_deref());
                    out.nodes(nodes);
                    out.error(&why, now);
                }
            }
            let next = started + self.interval;
            if !out.pause(next.saturating_duration_since(Instant::now()), &mut stop).await {
                return;
            }
        }
    }
}
