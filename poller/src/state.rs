//! The poller's current state: the published document plus what the poller knows about how
//! fresh it is, shared between the watcher (the only writer) and the HTTP handlers (readers)
//! through a `tokio::sync::watch` channel.
//!
//! Receivers are woken only when the document's version changes, so a thousand long-polls
//! cost nothing while Consul answers "no change". Ages are computed when asked, from tokio's
//! clock, so tests can pause time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use vault_redirect_core::{ActiveNode, StateDoc};

/// Reason while no Consul answer has arrived yet.
pub const REASON_STARTING: &str = "waiting for the first answer from Consul";
/// Reason once Consul has failed for longer than `--max-stale` (or before any good answer).
pub const REASON_CONSUL_DOWN: &str = "no good answer from Consul within --max-stale";

/// What the poller knows at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The document, without `age_ms` / `last_consul_ok_unix_ms` (filled in at answer time).
    pub doc: StateDoc,
    /// When the document's meaning (and so its version) last changed.
    pub changed_at: Instant,
    /// The last moment the poller knew its view matched Consul; `None` before the first
    /// good answer.
    pub confirmed: Option<Instant>,
    /// While a blocking query that followed a good answer is open, Consul has promised to
    /// answer by this moment: until then the view counts as confirmed.
    pub in_flight_until: Option<Instant>,
    /// The last Consul error, while Consul is failing.
    pub consul_error: Option<String>,
    /// Every node that qualified as active in the last good answer, the chosen one first.
    pub candidates: Vec<String>,
    /// Active-tagged nodes refused as redirect targets in the last good answer.
    pub refused_targets: Vec<String>,
    /// `X-Consul-KnownLeader` of the last good answer.
    pub known_leader: bool,
}

impl Snapshot {
    /// The state before anything is known.
    pub fn initial(now: Instant) -> Self {
        Snapshot {
            doc: StateDoc::none(REASON_STARTING),
            changed_at: now,
            confirmed: None,
            in_flight_until: None,
            consul_error: None,
            candidates: Vec::new(),
            refused_targets: Vec::new(),
            known_leader: true,
        }
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
        doc.last_consul_ok_unix_ms = age.map(|a| unix_ms(SystemTime::now()).saturating_sub(a.as_millis() as u64));
        doc
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
        let mut s = Snapshot::initial(t0);
        assert_eq!(s.age(t0), None);
        s.confirmed = Some(t0);
        s.in_flight_until = Some(t0 + Duration::from_secs(64));
        assert_eq!(s.age(t0 + Duration::from_secs(30)), Some(Duration::ZERO));
        assert_eq!(s.age(t0 + Duration::from_secs(70)), Some(Duration::from_secs(6)));
        s.in_flight_until = None;
        assert_eq!(s.age(t0 + Duration::from_secs(70)), Some(Duration::from_secs(70)));
    }
}
