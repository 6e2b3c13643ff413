//! The Consul watch loop: blocking queries on the Vault service's health, following Consul's
//! documented client rules; each answer becomes a [`Reading`] for the [`Publisher`].
//!
//! Rules it keeps (consul: api-docs/features/blocking.mdx): the index of the last answer is
//! sent back with `wait`; an index lower than the previous one resets to 0 (a fresh,
//! non-blocking read); an index of 0 becomes 1; a token bucket keeps a churning Consul from
//! turning the loop into a spin; errors back off exponentially (with jitter, capped); after an
//! error the next read is non-blocking so recovery is seen at once. While Consul fails the
//! publisher keeps the last good state for `--max-stale`, then publishes "no active node".
//!
//! It never answers HTTP requests and never sleeps without also watching for shutdown.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::choose::{choose_active, node_statuses};
use super::client::{ConsulClient, HealthAnswer};
pub use crate::source::backoff::{Backoff, BACKOFF_BASE};
use crate::source::{Publisher, Reading};

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
    /// Longest pause between retries.
    pub backoff_max: Duration,
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

/// The loop and what it publishes through.
pub struct Watcher {
    client: ConsulClient,
    settings: WatchSettings,
    out: Publisher,
}

impl Watcher {
    /// A watcher publishing through `out`.
    pub fn new(client: ConsulClient, settings: WatchSettings, out: Publisher) -> Self {
        Watcher { client, settings, out }
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
                if !self.out.pause(delay, &mut stop).await {
                    return;
                }
            }
            let started = Instant::now();
            if last_ok && index > 0 {
                // Consul must answer by wait + wait/16: until then silence means "no change".
                self.out.promise_until(started + wait + wait / 16);
            }
            let Some(result) =
                self.out.expire_while(self.client.fetch(index, wait), &mut stop).await
            else {
                return;
            };
            let seconds = started.elapsed().as_secs_f64();
            match result {
                Ok(answer) => {
                    let outcome = if answer.index == index { "unchanged" } else { "changed" };
                    self.out.metrics().consul_request(outcome, seconds);
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
                    self.out
                        .reading(reading(&answer, &self.settings, index_offset), Instant::now());
                }
                Err(err) => {
                    self.out.metrics().consul_request(err.outcome(), seconds);
                    if last_ok {
                        log::warn!("consul: {err}");
                    } else {
                        log::debug!("consul: still failing: {err}");
                    }
                    last_ok = false;
                    // After an error, read at once rather than block: a Consul that came
                    // back may have changed while we were away.
                    index = 0;
                    self.out.error(&err.to_string(), Instant::now());
                    if !self.out.pause(backoff.next_delay(), &mut stop).await {
                        return;
                    }
                }
            }
        }
    }
}

/// What one health answer says, judged: the choice of the active node and every instance.
pub fn reading(answer: &HealthAnswer, settings: &WatchSettings, index_offset: u64) -> Reading {
    let choice = choose_active(&answer.entries, &settings.service, &settings.active_tag);
    let nodes = node_statuses(&answer.entries, &choice);
    let problems = if answer.known_leader {
        Vec::new()
    } else {
        vec!["Consul reports no known leader (stale read)".to_string()]
    };
    Reading {
        index: answer.index,
        index_offset,
        active: choice.active,
        // Consul does not record Vault's scheme: --redirect-scheme says it.
        scheme: None,
        reason: choice.reason,
        candidates: choice.candidates,
        refused_targets: choice.refused_targets,
        nodes,
        problems,
    }
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
