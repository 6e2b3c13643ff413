//! The pause between a source's retries after errors, shared by every source.

use std::time::Duration;

/// The first pause after an error; it doubles up to `--backoff-max`.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);

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
