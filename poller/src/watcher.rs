//! The Consul watch loop: blocking queries on the Vault service's health, following Consul's
//! documented client rules, and the only writer of the poller's state.
//!
//! Rules it keeps (consul: api-docs/features/blocking.mdx): the index of the last answer is
//! sent back with `wait`; an index lower than the previous one resets to 0 (a fresh,
//! non-blocking read); an index of 0 becomes 1; a token bucket keeps a churning Consul from
//! turning the loop into a spin; errors back off exponentially (with jitter, capped); after an
//! error the next read is non-blocking so recovery is seen at once. It keeps the last good
//! state for `--max-stale` while Consul fails, then publishes "no active node".
//!
//! It never answers HTTP requests and never sleeps without also watching for shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use vault_redirect_core::StateDoc;

use crate::choose::{choose_active, node_statuses};
use crate::consul::{ConsulClient, ConsulError, HealthAnswer};
use crate::metrics::Metrics;
use crate::state::{Snapshot, REASON_CONSUL_DOWN};

/// The first pause after an error; it doubles up to `--backoff-max`.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Requests allowed back to back before the rate limit applies (a failover is a few changes
/// in quick succession; they must all go through at once).
pub const RATE_BURST: f64 = 10.0;
/// Sustained requests per second when Consul answers faster than it should.
pub const RATE_PER_SEC: f64 = 5.0;

/// What the loop needs besides the client.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// Service name, for reasons and logs.
    pub service: String,
    /// The tag that marks the active node.
    pub active_tag: String,
    /// Blocking wait sent to Consul.
    pub wait: Duration,
    /// How long to keep the last good state while Consul fails.
    pub max_stale: Duration,
    /// Longest pause between retries.
    pub backoff_max: Duration,
}

/// Exponential backoff with "equal jitter": each pause is between half and all of the current
/// step, so a fleet of pollers that lost Consul together does not come back together.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Starts at `base`, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max: max.max(base), step: Duration::ZERO }
    }

    /// The pause before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        self.step = if self.step.is_zero() { self.base } else { (self.step * 2).min(self.max) };
        let half = self.step / 2;
        let extra = rand::random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(extra)
    }

    /// After a success: the next error starts from `base` again.
    pub fn reset(&mut self) {
        self.step = Duration::ZERO;
    }
}

/// A token bucket: `burst` requests at once, then `per_sec`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: f64, per_sec: f64, now: Instant) -> Self {
        TokenBucket { burst, per_sec, tokens: burst, last: now }
    }

    /// Takes a token for a request at `now`; returns how long to wait before sending it.
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }
}

/// The loop and what it writes to.
pub struct Watcher {
    client: ConsulClient,
    settings: WatchSettings,
    state: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Watcher {
    /// A watcher publishing into `state`.
    pub fn new(
        client: ConsulClient,
        settings: WatchSettings,
        state: watch::Sender<Snapshot>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Watcher { client, settings, state, metrics }
    }

    /// Runs until `stop` becomes true (or its sender is dropped).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut index: u64 = 0;
        // The index of the last good answer (kept across errors, unlike `index`) and what
        // versions add to Consul's index (see `Snapshot::index_offset`).
        let mut last_answer_index: Option<u64> = None;
        let mut index_offset: u64 = 0;
        let mut last_ok = true; // true at start: a Consul down from the start is warned about once, too
        let mut ever_ok = false;
        let mut backoff = Backoff::new(BACKOFF_BASE, self.settings.backoff_max);
        let mut bucket = TokenBucket::new(RATE_BURST, RATE_PER_SEC, Instant::now());
        let wait = self.settings.wait;
        loop {
            if *stop.borrow() {
                return;
            }
            let delay = bucket.take(Instant::now());
            if !delay.is_zero() {
                log::debug!("consul: rate limit, next request in {}ms", delay.as_millis());
                if !self.pause(delay, &mut stop).await {
                    return;
                }
            }
            let started = Instant::now();
            if last_ok && index > 0 {
                // Consul must answer by wait + wait/16: until then silence means "no change".
                let until = started + wait + wait / 16;
                self.state.send_if_modified(|s| {
                    s.in_flight_until = Some(until);
                    false
                });
            }
            let fetch = self.client.fetch(index, wait);
            tokio::pin!(fetch);
            let result = loop {
                let deadline = self.stale_deadline();
                tokio::select! {
                    r = &mut fetch => break r,
                    _ = sleep_until_opt(deadline) => self.expire(Instant::now()),
                    _ = stop.changed() => return,
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            match result {
                Ok(answer) => {
                    let outcome = if answer.index == index { "unchanged" } else { "changed" };
                    self.metrics.consul_request(outcome, seconds);
                    if !ever_ok {
                        log::info!("consul: first answer (index {})", answer.index);
                    } else if !last_ok {
                        log::info!("consul: answering again (index {})", answer.index);
                    }
                    ever_ok = true;
                    backoff.reset();
                    last_ok = true;
                    index = next_index(index, answer.index);
                    index_offset = next_offset(index_offset, last_answer_index, answer.index);
                    last_answer_index = Some(answer.index);
                    self.apply_answer(answer, index_offset, Instant::now());
                }
                Err(err) => {
                    self.metrics.consul_request(err.outcome(), seconds);
                    if last_ok {
                        log::warn!("consul: {err}");
                    } else {
                        log::debug!("consul: still failing: {err}");
                    }
                    last_ok = false;
                    // After an error, read at once rather than block: a Consul that came
                    // back may have changed while we were away.
                    index = 0;
                    self.apply_error(&err, Instant::now());
                    if !self.pause(backoff.next_delay(), &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps for `d` while keeping the staleness deadline; false when told to stop.
    async fn pause(&self, d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
        let end = Instant::now() + d;
        loop {
            let deadline = self.stale_deadline();
            tokio::select! {
                _ = tokio::time::sleep_until(end) => return true,
                _ = sleep_until_opt(deadline) => self.expire(Instant::now()),
                _ = stop.changed() => return false,
            }
        }
    }

    /// When the last good state stops being served, if it still is.
    fn stale_deadline(&self) -> Option<Instant> {
        let s = self.state.borrow();
        if is_down(&s.doc) {
            return None;
        }
        let confirmed = s.confirmed?;
        let credited = s.in_flight_until.map_or(confirmed, |u| u.max(confirmed));
        Some(credited + self.settings.max_stale)
    }

    fn apply_answer(&self, answer: HealthAnswer, index_offset: u64, now: Instant) {
        let choice =
            choose_active(&answer.entries, &self.settings.service, &self.settings.active_tag);
        let nodes = node_statuses(&answer.entries, &choice);
        if !choice.refused_targets.is_empty() {
            self.metrics.refused_targets.inc_by(choice.refused_targets.len() as u64);
        }
        self.metrics.active_candidates.set(choice.candidates.len() as i64);
        let metrics = &self.metrics;
        self.state.send_if_modified(|s| {
            let candidates = choice.candidates.len() as u32;
            let changed = s.doc.active != choice.active
                || s.doc.reason != choice.reason
                || s.doc.active_candidates != candidates;
            let previous = s.doc.active.clone();
            if changed {
                s.doc.version = StateDoc::next_version(
                    s.doc.version,
                    index_offset.saturating_add(answer.index),
                );
                s.changed_at = now;
                if s.doc.active != choice.active {
                    metrics.active_changes.inc();
                    match &choice.active {
                        Some(a) => log::info!(
                            "active Vault node is now {} ({}:{}), state version {}",
                            a.node,
                            a.address,
                            a.port,
                            s.doc.version
                        ),
                        None => log::warn!(
                            "no active Vault node: {}, state version {}",
                            choice.reason.as_deref().unwrap_or("unknown"),
                            s.doc.version
                        ),
                    }
                }
                if candidates > 1 {
                    log::warn!(
                        "{candidates} nodes qualify as active ({}); chose {} (newest registration)",
                        choice.candidates.join(", "),
                        choice.candidates.first().map(String::as_str).unwrap_or("")
                    );
                }
                for refused in &choice.refused_targets {
                    log::warn!("refused redirect target {refused}");
                }
            }
            s.doc.active = choice.active.clone();
            s.doc.reason = choice.reason.clone();
            s.doc.active_candidates = candidates;
            s.doc.consul_index = answer.index;
            s.index_offset = index_offset;
            s.confirmed = Some(now);
            s.in_flight_until = None;
            s.consul_error = None;
            s.candidates = choice.candidates.clone();
            s.refused_targets = choice.refused_targets.clone();
            s.known_leader = answer.known_leader;
            s.nodes = nodes;
            s.record_active_change(previous, now);
            metrics.active_node.set(i64::from(s.doc.active.is_some()));
            changed
        });
    }

    fn apply_error(&self, err: &ConsulError, now: Instant) {
        self.state.send_if_modified(|s| {
            // An open blocking query counted as confirmation until it failed; keep that much.
            s.confirmed = s.confirmed_at(now);
            s.in_flight_until = None;
            s.consul_error = Some(err.to_string());
            if s.confirmed.is_none() && !is_down(&s.doc) {
                // Nothing good to keep: say why at once.
                set_down(s, now);
                return true;
            }
            false
        });
    }

    fn expire(&self, now: Instant) {
        let metrics = &self.metrics;
        let max_stale = self.settings.max_stale;
        self.state.send_if_modified(|s| {
            if is_down(&s.doc) {
                return false;
            }
            if s.doc.active.is_some() {
                metrics.active_changes.inc();
            }
            set_down(s, now);
            metrics.active_node.set(0);
            log::warn!(
                "no good Consul answer for {}: no longer serving the last known active node (state version {})",
                crate::duration::display(max_stale),
                s.doc.version
            );
            true
        });
    }
}

fn is_down(doc: &StateDoc) -> bool {
    doc.active.is_none() && doc.reason.as_deref() == Some(REASON_CONSUL_DOWN)
}

fn set_down(s: &mut Snapshot, now: Instant) {
    let previous = s.doc.active.take();
    s.doc.version = StateDoc::next_version(s.doc.version, s.version_index());
    s.doc.reason = Some(REASON_CONSUL_DOWN.to_string());
    s.doc.active_candidates = 0;
    s.changed_at = now;
    s.record_active_change(previous, now);
}

/// The offset versions add to Consul's index, after an answer carrying `returned` when the
/// previous good answer carried `last` (`None`: no answer yet).
///
/// When Consul's index goes backwards (a snapshot restore, another server), versions must
/// still grow, and should grow the same on every replica: the offset grows by the last index
/// seen + 1, a value every replica that followed Consul up to the reset shares (it does not
/// depend on which lower index a replica happened to see first).
pub fn next_offset(offset: u64, last: Option<u64>, returned: u64) -> u64 {
    match last {
        Some(last) if returned < last => offset.saturating_add(last).saturating_add(1),
        _ => offset,
    }
}

/// The index to send next, after an answer carrying `returned` to a request that sent `sent`.
pub fn next_index(sent: u64, returned: u64) -> u64 {
    if returned < sent {
        // Consul's index went backwards (snapshot restore, another server): start over.
        log::info!("consul: index went backwards from {sent} to {returned}; resetting");
        0
    } else if returned == 0 {
        // A Consul bug the docs warn about: blocking on 0 would spin.
        1
    } else {
        returned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_resets_when_it_goes_backwards_and_is_never_zero_after_an_answer() {
        assert_eq!(next_index(0, 17), 17);
        assert_eq!(next_index(17, 17), 17);
        assert_eq!(next_index(17, 20), 20);
        assert_eq!(next_index(17, 3), 0);
        assert_eq!(next_index(0, 0), 1);
    }

    #[test]
    fn the_version_offset_grows_past_the_last_index_when_consul_goes_backwards() {
        assert_eq!(next_offset(0, None, 17), 0);
        assert_eq!(next_offset(0, Some(17), 17), 0);
        assert_eq!(next_offset(0, Some(17), 20), 0);
        // Reset from 20 to 3 or to 5: the same offset whatever lower index came first.
        assert_eq!(next_offset(0, Some(20), 3), 21);
        assert_eq!(next_offset(0, Some(20), 5), 21);
        // A second reset stacks on the first.
        assert_eq!(next_offset(21, Some(9), 2), 31);
        // A zero index (a Consul bug) after zeros is not a reset.
        assert_eq!(next_offset(0, Some(0), 0), 0);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let steps = [250u64, 500, 1000, 2000, 2000, 2000];
        for step in steps {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(step / 2) && d <= Duration::from_millis(step),
                "{d:?} vs {step}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_bucket_lets_a_burst_through_then_paces() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3.0, 2.0, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Duration::ZERO);
        }
        assert_eq!(bucket.take(t0), Duration::from_millis(500));
        // After a quiet second, two tokens are back (the debt of one is paid first).
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(bucket.take(t1), Duration::ZERO);
    }
}
