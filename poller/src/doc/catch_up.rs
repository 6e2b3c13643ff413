//! Keeping versions comparable across poller replicas.
//!
//! A version is `consul_index << 16` when the document's meaning changes with a Consul answer
//! (in version space: plus `Snapshot::index_offset`, which keeps versions growing, and
//! agreeing across replicas, after Consul's index went back), or the previous version + 1 for
//! a local event (this replica going stale). The high part is the same on every replica that
//! saw the same Consul
//! answer; the low part is this replica's own history. So a filter can arrive from a sibling
//! holding a version above ours for the same Consul data: typically the sibling lost Consul and
//! published "no active node" at `index << 16 | 1` while we still see Consul fine at
//! `index << 16`. Filters keep the newest version only, so without help they would keep the
//! sibling's "no active node" (and answer 503) until their reset period (2 × wait) ran out.
//!
//! The help is a Lamport step: a long-poll asking for a version above ours, whose high part
//! this replica's view of Consul has already reached, bumps our version just past it (same
//! content). The filter takes it at once. It never hands a filter older Consul data than it
//! held: the bump happens only when our last Consul answer is at least as new as the index
//! behind the filter's version, and only while our view of Consul is current.
//!
//! It never changes the document's content, and never bumps into the next index's range.

use std::time::Duration;

use tokio::time::Instant;
use vault_redirect_core::state::LOCAL_EVENT_BITS;

use crate::doc::readiness::not_ready_because;
use crate::state::Snapshot;

const LOW_MASK: u64 = (1 << LOCAL_EVENT_BITS) - 1;

/// The version this replica should move to so a long-poll for `asked` is answered with its own
/// (at least as new) view, or `None` when it must wait for its own next change as usual.
pub fn catch_up_version(
    s: &Snapshot,
    asked: u64,
    max_stale: Duration,
    now: Instant,
) -> Option<u64> {
    let ours = s.doc.version;
    if !s.source.versions_agree_across_replicas()
        || asked <= ours
        || not_ready_because(s, max_stale, now).is_some()
    {
        return None;
    }
    let asked_index = asked >> LOCAL_EVENT_BITS;
    let ours_index = s.version_index();
    if asked_index > ours_index {
        // The sibling saw Consul data we have not seen yet: our own answer is on its way.
        return None;
    }
    if asked & LOW_MASK == LOW_MASK {
        // One more would be the next index's version.
        return None;
    }
    let from_index = ours_index.checked_mul(1 << LOCAL_EVENT_BITS)?;
    Some(from_index.max(asked + 1))
}

/// Applies [`catch_up_version`] to the snapshot; true when the version moved.
pub fn catch_up(s: &mut Snapshot, asked: u64, max_stale: Duration, now: Instant) -> bool {
    match catch_up_version(s, asked, max_stale, now) {
        Some(v) => {
            log::debug!(
                "version {} raised to {v}: a filter holds {asked} from another replica",
                s.doc.version
            );
            s.doc.version = v;
            s.changed_at = now;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_redirect_core::{ActiveNode, StateDoc};

    const MAX_STALE: Duration = Duration::from_secs(60);

    fn serving(index: u64, version: u64, now: Instant) -> Snapshot {
        let mut s = Snapshot::initial(now, crate::source::SourceKind::Consul);
        s.doc = StateDoc::none("x");
        s.doc.reason = None;
        s.doc.active =
            Some(ActiveNode { node: "vault-a".into(), address: "10.0.0.1".into(), port: 8200 });
        s.doc.version = version;
        s.doc.consul_index = index;
        s.confirmed = Some(now);
        s
    }

    #[tokio::test(start_paused = true)]
    async fn a_siblings_local_event_on_data_we_have_seen_moves_us_just_past_it() {
        let now = Instant::now();
        let s = serving(20, 20 << 16, now);
        assert_eq!(catch_up_version(&s, (20 << 16) + 1, MAX_STALE, now), Some((20 << 16) + 2));
        // Our Consul view is newer than the sibling's: our index's version is enough.
        let s = serving(25, 20 << 16, now);
        assert_eq!(catch_up_version(&s, (20 << 16) + 1, MAX_STALE, now), Some(25 << 16));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_moves_for_older_versions_newer_consul_data_or_a_stale_view() {
        let now = Instant::now();
        let s = serving(20, (20 << 16) + 3, now);
        assert_eq!(catch_up_version(&s, (20 << 16) + 3, MAX_STALE, now), None);
        assert_eq!(catch_up_version(&s, 19 << 16, MAX_STALE, now), None);
        // The sibling has seen index 21; we have not: wait for our own answer.
        assert_eq!(catch_up_version(&s, 21 << 16, MAX_STALE, now), None);
        // Never into the next index's range.
        assert_eq!(catch_up_version(&s, (20 << 16) | LOW_MASK, MAX_STALE, now), None);
        // A replica whose own view is stale must not claim to be newer.
        assert_eq!(
            catch_up_version(&s, (20 << 16) + 5, MAX_STALE, now + Duration::from_secs(61)),
            None
        );
        let mut starting = Snapshot::initial(now, crate::source::SourceKind::Consul);
        starting.doc.consul_index = 20;
        assert_eq!(catch_up_version(&starting, (20 << 16) + 5, MAX_STALE, now), None);
        // Kubernetes versions are each replica's observation time: a later time elsewhere
        // does not mean this replica has seen that data.
        let mut k8s = serving(20, 20 << 16, now);
        k8s.source = crate::source::SourceKind::Kubernetes;
        assert_eq!(catch_up_version(&k8s, (20 << 16) + 1, MAX_STALE, now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn catching_up_changes_only_the_version() {
        let now = Instant::now();
        let mut s = serving(20, 20 << 16, now);
        let before = s.doc.clone();
        assert!(catch_up(&mut s, (20 << 16) + 1, MAX_STALE, now));
        assert_eq!(s.doc.version, (20 << 16) + 2);
        assert_eq!(StateDoc { version: before.version, ..s.doc.clone() }, before);
        assert!(!catch_up(&mut s, (20 << 16) + 1, MAX_STALE, now));
    }
}
