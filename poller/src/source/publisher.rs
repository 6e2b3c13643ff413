//! The one way a source changes the poller's state: readings in, a versioned snapshot out.
//!
//! It owns what every source shares: when a reading changes the document's meaning and so its
//! version (`StateDoc::next_version` over the reading's index), the history of active-node
//! changes, keeping the last good state for `--max-stale` while the source fails and then
//! publishing "no active node", the logs of those events, and the metrics of the choice.
//! It never talks to a source's backend and never sleeps but in [`Publisher::pause`] and
//! [`Publisher::expire_while`], which keep the staleness deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use vault_redirect_core::{ActiveNode, Scheme, StateDoc};

use crate::metrics::Metrics;
use crate::state::{NodeStatus, Snapshot};

/// What a source saw in one good answer, already judged: the chosen node, or why none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The source's position for this answer (Consul's `X-Consul-Index`), served as the
    /// document's `consul_index`. Versions are built from `index_offset + index`, so two
    /// replicas reading the same data must see the same value, and it must not go backwards
    /// but through `index_offset`.
    pub index: u64,
    /// Added to `index` in version space when the source's own index went backwards.
    pub index_offset: u64,
    /// The node to redirect to, if any (its address already validated as a target).
    pub active: Option<ActiveNode>,
    /// The scheme of the active node's own address, for sources that know it (Vault's
    /// `api_addr`); `None`: the configured `--redirect-scheme`.
    pub scheme: Option<Scheme>,
    /// Why there is none.
    pub reason: Option<String>,
    /// Every node that qualified as active, the chosen one first.
    pub candidates: Vec<String>,
    /// Nodes that claimed to be active but cannot be redirected to, each with why.
    pub refused_targets: Vec<String>,
    /// Every node the source knows, as the status page shows them, in display order.
    pub nodes: Vec<NodeStatus>,
    /// Problems the source sees in its own backend, in words (e.g. Consul has no leader);
    /// `/health` and the status page list them.
    pub problems: Vec<String>,
}

/// Writes a source's readings and errors into the shared snapshot.
#[derive(Clone)]
pub struct Publisher {
    state: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
    max_stale: Duration,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Publisher {
    /// A publisher into `state` that keeps a good state for `max_stale` while the source fails.
    pub fn new(state: watch::Sender<Snapshot>, metrics: Arc<Metrics>, max_stale: Duration) -> Self {
        Publisher { state, metrics, max_stale }
    }

    /// The metrics, for a source's own counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Says the source has promised an answer by `until` (an open blocking query after a good
    /// answer): until then silence counts as "no change" and the view as confirmed.
    pub fn promise_until(&self, until: Instant) {
        self.state.send_if_modified(|s| {
            s.in_flight_until = Some(until);
            false
        });
    }

    /// Applies a good answer at `now`; the version moves only when the meaning changed.
    pub fn reading(&self, reading: Reading, now: Instant) {
        let metrics = &self.metrics;
        if !reading.refused_targets.is_empty() {
            metrics.refused_targets.inc_by(reading.refused_targets.len() as u64);
        }
        metrics.active_candidates.set(reading.candidates.len() as i64);
        self.state.send_if_modified(|s| {
            let candidates = reading.candidates.len() as u32;
            let changed = s.doc.active != reading.active
                || s.doc.scheme != reading.scheme
                || s.doc.reason != reading.reason
                || s.doc.active_candidates != candidates;
            let previous = s.doc.active.clone();
            if changed {
                s.doc.version = StateDoc::next_version(
                    s.doc.version,
                    reading.index_offset.saturating_add(reading.index),
                );
                s.changed_at = now;
                if s.doc.active != reading.active {
                    metrics.active_changes.inc();
                    match &reading.active {
                        Some(a) => log::info!(
                            "active Vault node is now {} ({}:{}), state version {}",
                            a.node,
                            a.address,
                            a.port,
                            s.doc.version
                        ),
                        None => log::warn!(
                            "no active Vault node: {}, state version {}",
                            reading.reason.as_deref().unwrap_or("unknown"),
                            s.doc.version
                        ),
                    }
                }
                if candidates > 1 {
                    log::warn!(
                        "{candidates} nodes qualify as active ({}); chose {}",
                        reading.candidates.join(", "),
                        reading.candidates.first().map(String::as_str).unwrap_or("")
                    );
                }
                for refused in &reading.refused_targets {
                    log::warn!("refused redirect target {refused}");
                }
            }
            s.doc.active = reading.active.clone();
            s.doc.scheme = reading.scheme;
            s.doc.reason = reading.reason.clone();
            s.doc.active_candidates = candidates;
            s.doc.consul_index = reading.index;
            s.index_offset = reading.index_offset;
            s.confirmed = Some(now);
            s.in_flight_until = None;
            s.source_error = None;
            s.candidates = reading.candidates.clone();
            s.refused_targets = reading.refused_targets.clone();
            s.source_problems = reading.problems.clone();
            s.nodes = reading.nodes.clone();
            s.record_active_change(previous, now);
            metrics.active_node.set(i64::from(s.doc.active.is_some()));
            changed
        });
    }

    /// Shows what the source last saw of each node while its answers tell nothing about the
    /// active node (they are not a reading): the rows change, the document does not.
    pub fn nodes(&self, nodes: Vec<NodeStatus>) {
        self.state.send_if_modified(|s| {
            s.nodes = nodes;
            false
        });
    }

    /// Records a failed answer at `now`: the last good state stays (up to `--max-stale`),
    /// unless there never was one, then "no active node" is published at once.
    pub fn error(&self, error: &str, now: Instant) {
        self.state.send_if_modified(|s| {
            // An open blocking query counted as confirmation until it failed; keep that much.
            s.confirmed = s.confirmed_at(now);
            s.in_flight_until = None;
            s.source_error = Some(error.to_string());
            if s.confirmed.is_none() && !s.gave_up() {
                give_up(s, now);
                return true;
            }
            false
        });
    }

    /// Waits for `work` while keeping the staleness deadline (publishing "no active node" once
    /// the last good state is older than `--max-stale`); `None` when `stop` turned true first.
    pub async fn expire_while<T>(
        &self,
        work: impl Future<Output = T>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            let deadline = self.stale_deadline();
            tokio::select! {
                r = &mut work => return Some(r),
                _ = sleep_until_opt(deadline) => self.expire(Instant::now()),
                _ = stop.changed() => return None,
            }
        }
    }

    /// Sleeps for `d` while keeping the staleness deadline; false when told to stop.
    pub async fn pause(&self, d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
        self.expire_while(tokio::time::sleep(d), stop).await.is_some()
    }

    /// When the last good state stops being served, if it still is.
    fn stale_deadline(&self) -> Option<Instant> {
        let s = self.state.borrow();
        if s.gave_up() {
            return None;
        }
        let confirmed = s.confirmed?;
        let credited = s.in_flight_until.map_or(confirmed, |u| u.max(confirmed));
        Some(credited + self.max_stale)
    }

    fn expire(&self, now: Instant) {
        let metrics = &self.metrics;
        let max_stale = self.max_stale;
        self.state.send_if_modified(|s| {
            if s.gave_up() {
                return false;
            }
            if s.doc.active.is_some() {
                metrics.active_changes.inc();
            }
            give_up(s, now);
            metrics.active_node.set(0);
            log::warn!(
                "no good {} answer for {}: no longer serving the last known active node (state version {})",
                s.source.display(),
                crate::duration::display(max_stale),
                s.doc.version
            );
            true
        });
    }
}

/// Publishes "no active node" because the source failed for too long: a local event, so the
/// version moves by one within the last index's range.
fn give_up(s: &mut Snapshot, now: Instant) {
    let previous = s.doc.active.take();
    s.doc.version = StateDoc::next_version(s.doc.version, s.version_index());
    s.doc.reason = Some(s.source.down_reason().to_string());
    s.doc.active_candidates = 0;
    s.changed_at = now;
    s.record_active_change(previous, now);
}
