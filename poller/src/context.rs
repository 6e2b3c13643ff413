//! The context every HTTP handler shares: the state's receiver, the metrics, the stop signal
//! and the facts that do not change while running ([`Info`]).
//!
//! It owns no behaviour: handlers (`http`), the long-poll (`longpoll`) and the documents
//! (`doc`) read it. It never writes the state's content; only a source does (`source`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vault_redirect_core::RedirectPolicy;

use crate::metrics::Metrics;
use crate::source::SourceInfo;
use crate::state::Snapshot;

/// What every handler reads.
#[derive(Clone)]
pub struct AppState {
    /// The source's state.
    pub state: watch::Receiver<Snapshot>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Becomes true at shutdown: long-polls answer at once.
    pub stop: watch::Receiver<bool>,
    /// Fixed facts for the health document.
    pub info: Arc<Info>,
    /// The state's sender, used only to raise the version past a sibling replica's (see
    /// `doc::catch_up`); the source stays the only writer of the document's content.
    pub versions: watch::Sender<Snapshot>,
}

/// Facts the documents report that never change while running.
#[derive(Clone, Debug)]
pub struct Info {
    /// The source of truth and what it watches.
    pub source: SourceInfo,
    /// How `active_vault` names the node (as the redirects would).
    pub policy: RedirectPolicy,
    /// `--max-stale`, for the explanation while serving a stale state.
    pub max_stale: Duration,
    /// `--max-waiters`: long-polls parked at once before new ones are answered at once.
    pub max_waiters: u64,
}
