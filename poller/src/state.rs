//! The poller's current state: the published document plus what the poller knows about how
//! fresh it is, shared between the source (the only writer, through `source::Publisher`) and
//! the HTTP handlers (readers) through a `tokio::sync::watch` channel.
//!
//! Receivers are woken only when the document's version changes, so a thousand long-polls
//! cost nothing while the source answers "no change". Ages are computed when asked, from tokio's
//! clock, so tests can pause time.
//!
//! Besides the document it keeps what operators look at (the status page, `status`): the
//! nodes of the source's last good answer and a bounded history of active-node changes.
//! Neither ever reaches `/v1/active`, whose shape belongs to `vault_redirect_core`. Nothing
//! here is specific to one source: a node is a name, an address, labels and checks in the
//! source's own words, and the source is named by [`SourceKind`].

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use vault_redirect_core::{ActiveNode, StateDoc};

use crate::source_kind::SourceKind;

/// How many active-node changes the state remembers (the status page's timeline).
pub const HISTORY_LEN: usize = 50;

/// One Vault node as the source's last good answer described it. Every source fills the
/// same row: Consul (tags; the sealed and agent checks), Vault (the last `sys/health` code as
/// a check, its latency, the error reaching it), Kubernetes (pod labels; readiness and sealed
/// as checks).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name in the source (Consul node, Vault node URL, pod name).
    pub node: String,
    /// The address redirects would use.
    pub address: String,
    /// The Vault API port.
    pub port: u16,
    /// Labels the source attaches, in its order (Consul's service tags; `key=value` pod
    /// labels).
    pub labels: Vec<String>,
    /// What the source checked about the node, in display order.
    pub checks: Vec<NodeCheck>,
    /// How long the source's last request to this node took, for sources that ask nodes.
    pub latency_ms: Option<u64>,
    /// Why the source's last request to this node failed, for sources that ask nodes.
    pub error: Option<String>,
    /// Whether the node qualified as active.
    pub candidate: bool,
    /// Whether it is the node served as active.
    pub active: bool,
}

/// One check of a node, as its source names and reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCheck {
    /// What was checked, short and lower-case (`sealed check`, `agent`, `sys/health`).
    pub name: String,
    /// The result in the source's words (`passing`, `critical`, `missing`, `200 active`).
    pub status: String,
    /// Whether the result allows the node to be active; a status page marks the others.
    pub ok: bool,
}

/// One change of the served active node (to or from none included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveChange {
    /// When it happened, on tokio's clock.
    pub at: Instant,
    /// When it happened, as wall time.
    pub at_unix_ms: u64,
    /// The state version that carried it.
    pub version: u64,
    /// The node served before.
    pub from: Option<ActiveNode>,
    /// The node served after; `None`: no active node.
    pub to: Option<ActiveNode>,
    /// Why there is no active node, when `to` is `None`.
    pub reason: Option<String>,
    /// When `to` is a node after a time without one: how long that time was.
    pub no_active_for: Option<Duration>,
}

/// What the poller knows at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The document, without `age_ms` / `last_consul_ok_unix_ms` (filled in at answer time).
    pub doc: StateDoc,
    /// When the document's meaning (and so its version) last changed.
    pub changed_at: Instant,
    /// The last moment the poller knew its view matched the source; `None` before the first
    /// good answer.
    pub confirmed: Option<Instant>,
    /// While a request that followed a good answer is open, the source has promised to answer
    /// by this moment (a Consul blocking query): until then the view counts as confirmed.
    pub in_flight_until: Option<Instant>,
    /// Which source writes this state.
    pub source: SourceKind,
    /// The source's last error, while it is failing.
    pub source_error: Option<String>,
    /// Every node that qualified as active in the last good answer, the chosen one first.
    pub candidates: Vec<String>,
    /// Active-tagged nodes refused as redirect targets in the last good answer.
    pub refused_targets: Vec<String>,
    /// Problems the source reported with its last good answer, in words (Consul without a
    /// known leader...).
    pub source_problems: Vec<String>,
    /// Every node of the source's last good answer, in its display order.
    pub nodes: Vec<NodeStatus>,
    /// The last [`HISTORY_LEN`] active-node changes, oldest first.
    pub changes: VecDeque<ActiveChange>,
    /// Since when the source's answers have shown no active node; `None` while one is served, and
    /// before any good answer (the poller starting is not the cluster lacking a node).
    pub no_active_since: Option<Instant>,
    /// Added to the source's index to build versions: grows by the last index seen + 1 each
    /// time that index goes backwards, so versions keep following the source's order after a
    /// reset, the same on every replica that saw the same index before it (see
    /// `doc::catch_up`).
    pub index_offset: u64,
}

impl Snapshot {
    /// The state before `source` has said anything.
    pub fn initial(now: Instant, source: SourceKind) -> Self {
        Snapshot {
            doc: StateDoc::none(source.starting_reason()),
            changed_at: now,
            confirmed: None,
            in_flight_until: None,
            source,
            source_error: None,
            candidates: Vec::new(),
            refused_targets: Vec::new(),
            source_problems: Vec::new(),
            nodes: Vec::new(),
            changes: VecDeque::new(),
            no_active_since: None,
            index_offset: 0,
        }
    }

    /// Records that the served node changed from `previous` to the document's current one
    /// (the caller has already set the new active node, reason and version).
    pub fn record_active_change(&mut self, previous: Option<ActiveNode>, now: Instant) {
        if previous == self.doc.active {
            if self.doc.active.is_none()
                && self.no_active_since.is_none()
                && self.confirmed.is_some()
            {
                // The source's first good answer already shows no active node.
                self.no_active_since = Some(now);
            }
            return;
        }
        let no_active_for = match (&self.doc.active, self.no_active_since) {
            (Some(_), Some(since)) => Some(now.saturating_duration_since(since)),
            _ => None,
        };
        self.no_active_since = match (&self.doc.active, self.no_active_since) {
            (Some(_), _) => None,
            (None, Some(since)) => Some(since),
            (None, None) => Some(now),
        };
        if self.changes.len() >= HISTORY_LEN {
            self.changes.pop_front();
        }
        self.changes.push_back(ActiveChange {
            at: now,
            at_unix_ms: unix_ms(SystemTime::now())
                .saturating_sub(Instant::now().saturating_duration_since(now).as_millis() as u64),
            version: self.doc.version,
            from: previous,
            to: self.doc.active.clone(),
            reason: if self.doc.active.is_none() { self.doc.reason.clone() } else { None },
            no_active_for,
        });
    }

    /// The latest moment the view counts as confirmed, as of `now`.
    pub fn confirmed_at(&self, now: Instant) -> Option<Instant> {
        let open = self.in_flight_until.map(|until| until.min(now));
        match (self.confirmed, open) {
            (Some(c), Some(o)) => Some(c.max(o)),
            (c, _) => c,
        }
    }

    /// How long ago the view was last confirmed.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.confirmed_at(now).map(|c| now.saturating_duration_since(c))
    }

    /// The document as served at `now`: ages measured now, wall time derived from them.
    pub fn doc_at(&self, now: Instant) -> StateDoc {
        let mut doc = self.doc.clone();
        let age = self.age(now);
        doc.age_ms = age.map(|a| a.as_millis().min(u128::from(u64::MAX)) as u64);
        doc.last_consul_ok_unix_ms =
            age.map(|a| unix_ms(SystemTime::now()).saturating_sub(a.as_millis() as u64));
        doc
    }

    /// Whether the poller gave up on its source: no good answer within `--max-stale` (or
    /// none at all), so "no active node" is served for that reason.
    pub fn gave_up(&self) -> bool {
        self.doc.active.is_none() && self.doc.reason.as_deref() == Some(self.source.down_reason())
    }

    /// The source's index of the last good answer in version space: [`Snapshot::index_offset`]
    /// plus the document's `consul_index`. Versions are this `<< 16`, plus local events.
    pub fn version_index(&self) -> u64 {
        self.index_offset.saturating_add(self.doc.consul_index)
    }

    /// The chosen node, if any.
    pub fn active(&self) -> Option<&ActiveNode> {
        self.doc.active.as_ref()
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in milliseconds (vault-redirector's
/// `last_consul_poll` format, in UTC).
pub fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_known_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_blocking_query_keeps_the_view_confirmed_until_its_deadline() {
        let t0 = Instant::now();
        let mut s = Snapshot::initial(t0, SourceKind::Consul);
        assert_eq!(s.age(t0), None);
        s.confirmed = Some(t0);
        s.in_flight_until = Some(t0 + Duration::from_secs(64));
        assert_eq!(s.age(t0 + Duration::from_secs(30)), Some(Duration::ZERO));
        assert_eq!(s.age(t0 + Duration::from_secs(70)), Some(Duration::from_secs(6)));
        s.in_flight_until = None;
        assert_eq!(s.age(t0 + Duration::from_secs(70)), Some(Duration::from_secs(70)));
    }

    fn node(name: &str) -> ActiveNode {
        ActiveNode { node: name.into(), address: "10.0.0.1".into(), port: 8200 }
    }

    fn switch(s: &mut Snapshot, to: Option<&str>, now: Instant) {
        let previous = s.doc.active.clone();
        s.doc.version += 1;
        s.doc.active = to.map(node);
        s.doc.reason = to.is_none().then(|| "election".to_string());
        s.record_active_change(previous, now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_time_without_an_active_node_records_how_long_that_was() {
        let t0 = Instant::now();
        let mut s = Snapshot::initial(t0, SourceKind::Consul);
        switch(&mut s, Some("vault-a"), t0 + Duration::from_millis(300));
        switch(&mut s, None, t0 + Duration::from_secs(10));
        switch(&mut s, Some("vault-b"), t0 + Duration::from_millis(12_500));
        // A direct handover has no gap.
        switch(&mut s, Some("vault-c"), t0 + Duration::from_secs(20));
        let gaps: Vec<Option<Duration>> = s.changes.iter().map(|c| c.no_active_for).collect();
        // The first is the poller learning, not the cluster recovering: no gap.
        assert_eq!(gaps, vec![None, None, Some(Duration::from_millis(2_500)), None]);
        assert_eq!(s.changes[1].reason.as_deref(), Some("election"));
        assert_eq!(s.changes[3].from.as_ref().map(|n| n.node.as_str()), Some("vault-b"));
        assert_eq!(s.no_active_since, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_answer_without_an_active_node_starts_the_gap() {
        let t0 = Instant::now();
        let mut s = Snapshot::initial(t0, SourceKind::Consul);
        s.confirmed = Some(t0 + Duration::from_secs(1));
        s.doc.reason = Some("election".into());
        s.record_active_change(None, t0 + Duration::from_secs(1));
        assert!(s.changes.is_empty());
        switch(&mut s, Some("vault-a"), t0 + Duration::from_secs(4));
        assert_eq!(s.changes[0].no_active_for, Some(Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_history_keeps_only_the_last_changes_and_ignores_non_changes() {
        let t0 = Instant::now();
        let mut s = Snapshot::initial(t0, SourceKind::Consul);
        for i in 0..(HISTORY_LEN + 7) {
            let name = if i % 2 == 0 { "vault-a" } else { "vault-b" };
            switch(&mut s, Some(name), t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(s.changes.len(), HISTORY_LEN);
        assert_eq!(s.changes.back().map(|c| c.version), Some((HISTORY_LEN + 7) as u64));
        assert_eq!(s.changes.front().map(|c| c.version), Some(8));
        let before = s.changes.len();
        let same = s.doc.active.clone();
        s.record_active_change(same, t0 + Duration::from_secs(999));
        assert_eq!(s.changes.len(), before);
    }
}
