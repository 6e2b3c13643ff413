//! The status document (`GET /v1/status`): everything the status page and the `status`
//! subcommand show, as of one moment.
//!
//! One type, [`StatusDoc`], is both what the server writes and what the subcommand reads, so
//! the two cannot drift. Pure: built from a snapshot, no HTTP; it never changes the state,
//! and nothing here is part of the filters' wire document (`/v1/active` stays
//! `vault_redirect_core`'s).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use vault_redirect_core::ActiveNode;

use crate::context::Info;
use crate::doc::health::problems;
use crate::source::SourceKind;
use crate::state::{unix_ms, ActiveChange, NodeStatus, Snapshot};

/// Everything the status page and `status` show, as of one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Whether an active node is served (what `/health` answers 200 for).
    pub healthy: bool,
    /// What is wrong, in words (the same list as `/health`).
    pub problems: Vec<String>,
    /// The state version served on `/v1/active`.
    pub version: u64,
    /// The active node served, if any.
    pub active: Option<ActiveNode>,
    /// Why there is none.
    pub reason: Option<String>,
    /// The source of truth (`--source`): `consul`, `vault` or `kubernetes`.
    pub source: SourceKind,
    /// Where the source reads from (Consul's `host:port`...).
    pub source_endpoint: String,
    /// What the source watches there, in words.
    pub source_watching: String,
    /// The source's index of the last good answer (the state document's `consul_index`).
    pub index: u64,
    /// Wall time of the last moment the view was known to match the source.
    pub last_ok_unix_ms: Option<u64>,
    /// Milliseconds since then (`None` before the first good answer).
    pub last_ok_age_ms: Option<u64>,
    /// The source's last error, while it is failing.
    pub source_error: Option<String>,
    /// `--max-stale` in milliseconds.
    pub max_stale_ms: u64,
    /// Milliseconds since the version last changed.
    pub state_age_ms: u64,
    /// While no node is served: for how long, in milliseconds.
    pub no_active_for_ms: Option<u64>,
    /// Open long-polls on `/v1/active` (the page's own included).
    pub longpoll_waiters: i64,
    /// Every node of the source's last good answer.
    pub nodes: Vec<NodeStatus>,
    /// The last active-node changes, newest first.
    pub changes: Vec<ChangeDoc>,
    /// The poller's wall clock when it answered, so readers compute "ago" without trusting
    /// their own clock.
    pub now_unix_ms: u64,
}

/// One active-node change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDoc {
    /// When, as Unix milliseconds.
    pub at_unix_ms: u64,
    /// The version that carried it.
    pub version: u64,
    /// The node served before.
    pub from: Option<ActiveNode>,
    /// The node served after (`None`: no active node).
    pub to: Option<ActiveNode>,
    /// Why there was no active node after it.
    pub reason: Option<String>,
    /// How long the cluster had been without an active node before this change brought one.
    pub no_active_for_ms: Option<u64>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ChangeDoc {
    fn of(c: &ActiveChange) -> Self {
        ChangeDoc {
            at_unix_ms: c.at_unix_ms,
            version: c.version,
            from: c.from.clone(),
            to: c.to.clone(),
            reason: c.reason.clone(),
            no_active_for_ms: c.no_active_for.map(ms),
        }
    }
}

/// The status document of `snapshot` at `now`.
pub fn status_document(snapshot: &Snapshot, info: &Info, waiters: i64, now: Instant) -> StatusDoc {
    let doc = snapshot.doc_at(now);
    StatusDoc {
        healthy: doc.active.is_some(),
        problems: problems(snapshot, info, now),
        version: doc.version,
        active: doc.active,
        reason: doc.reason,
        source: info.source.kind,
        source_endpoint: info.source.endpoint.clone(),
        source_watching: info.source.watching.clone(),
        index: doc.consul_index,
        last_ok_unix_ms: doc.last_consul_ok_unix_ms,
        last_ok_age_ms: doc.age_ms,
        source_error: snapshot.source_error.clone(),
        max_stale_ms: ms(info.max_stale),
        state_age_ms: ms(now.saturating_duration_since(snapshot.changed_at)),
        no_active_for_ms: snapshot
            .no_active_since
            .map(|since| ms(now.saturating_duration_since(since))),
        longpoll_waiters: waiters,
        nodes: snapshot.nodes.clone(),
        changes: snapshot.changes.iter().rev().map(ChangeDoc::of).collect(),
        now_unix_ms: unix_ms(SystemTime::now()),
    }
}
