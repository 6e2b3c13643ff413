//! Readiness of this replica, as a document: why it should not receive filters' long-polls
//! (no good answer from its source yet, or none within `--max-stale`), whatever Vault's state.
//! Pure: from a snapshot, no HTTP (`http::probes` serves it as `/readyz`).

use tokio::time::Instant;

use crate::state::Snapshot;

/// Why this replica should not receive filters' long-polls, or `None` when it should.
pub fn not_ready_because(
    snapshot: &Snapshot,
    max_stale: std::time::Duration,
    now: Instant,
) -> Option<String> {
    let source = snapshot.source.display();
    let Some(age) = snapshot.age(now) else {
        return Some(format!("no answer from {source} yet"));
    };
    if snapshot.gave_up() {
        return Some(snapshot.source.down_reason().to_string());
    }
    if age > max_stale {
        return Some(format!("view of {source} is {} ms old, beyond --max-stale", age.as_millis()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vault_redirect_core::StateDoc;

    use crate::source_kind::SourceKind;

    #[tokio::test(start_paused = true)]
    async fn ready_means_a_current_view_of_consul_not_an_active_vault_node() {
        let t0 = Instant::now();
        let max_stale = Duration::from_secs(60);
        let mut s = Snapshot::initial(t0, SourceKind::Consul);
        assert!(not_ready_because(&s, max_stale, t0).is_some(), "starting");
        // An election: Consul answers, no node is active. Still ready.
        s.doc = StateDoc::none("no instance of service \"vault\" is tagged \"active\"");
        s.confirmed = Some(t0);
        assert_eq!(not_ready_because(&s, max_stale, t0 + Duration::from_secs(1)), None);
        // Consul silent beyond max-stale: not ready.
        assert!(not_ready_because(&s, max_stale, t0 + Duration::from_secs(61)).is_some());
        // The watcher gave up on Consul.
        s.doc = StateDoc::none(SourceKind::Consul.down_reason());
        assert!(not_ready_because(&s, max_stale, t0).is_some());
    }
}
