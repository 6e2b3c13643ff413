//! Readiness of this replica, as a document: why it should not receive filters' long-polls
//! (no good answer from its source yet, or none within `--max-stale`), whatever Vault's state.
//! Pure: from a snapshot, no HTTP (`http::probes` serves it as `/readyz`).

use tokio::time::Instant;

use crate::state::{Snapshot, REASON_CONSUL_DOWN};

/// Why this replica should not receive filters' long-polls, or `None` when it should.
pub fn not_ready_because(
    snapshot: &Snapshot,
    max_stale: std::time::Duration,
    now: Instant,
) -> Option<String> {
    let Some(age) = snapshot.age(now) else {
        return Some("no answer from Consul yet".to_string());
    };
    if snapshot.doc.active.is_none() && snapshot.doc.reason.as_deref() == Some(REASON_CONSUL_DOWN) {
        return Some(REASON_CONSUL_DOWN.to_string());
    }
    if age > max_stale {
        return Some(format!("view of Consul is {} ms old, beyond --max-stale", age.as_millis()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vault_redirect_core::StateDoc;

    #[tokio::test(start_paused = true)]
    async fn ready_means_a_current_view_of_consul_not_an_active_vault_node() {
        let t0 = Instant::now();
        let max_stale = Duration::from_secs(60);
        let mut s = Snapshot::initial(t0);
        assert!(not_ready_because(&s, max_stale, t0).is_some(), "starting");
        // An election: Consul answers, no node is active. Still ready.
        s.doc = StateDoc::none("no instance of service \"vault\" is tagged \"active\"");
        s.confirmed = Some(t0);
        assert_eq!(not_ready_because(&s, max_stale, t0 + Duration::from_secs(1)), None);
        // Consul silent beyond max-stale: not ready.
        assert!(not_ready_because(&s, max_stale, t0 + Duration::from_secs(61)).is_some());
        // The watcher gave up on Consul.
        s.doc = StateDoc::none(REASON_CONSUL_DOWN);
        assert!(not_ready_because(&s, max_stale, t0).is_some());
    }
}
