//! Every metric the filter reports, named once. Envoy shows them in its stats (prefixed by
//! Envoy with `wasmcustom.`); all workers define the same names, so Envoy sums them.

use std::cell::Cell;

use crate::host;
use crate::types::MetricType;

/// Requests answered with a 307.
pub const REDIRECTS: &str = "vault_redirect.redirects";
/// Requests sent on to the active node (proxy mode).
pub const PROXIED: &str = "vault_redirect.proxied";
/// Requests answered 503 (or passed through) because no usable active node was known.
pub const NO_ACTIVE: &str = "vault_redirect.no_active";
/// Requests refused with 400 or 414 (target not origin-form, control bytes, too long).
pub const BAD_REQUESTS: &str = "vault_redirect.bad_requests";
/// Requests on a pass-through path.
pub const PASS_THROUGH: &str = "vault_redirect.pass_through";
/// New state versions applied by a worker (from its poll or from a sibling).
pub const STATE_UPDATES: &str = "vault_redirect.state_updates";
/// Failed or timed-out polls of the poller, and unreadable answers.
pub const POLL_FAILURES: &str = "vault_redirect.poll_failures";
/// States whose active node could not be redirected to (invalid host).
pub const REFUSED_TARGETS: &str = "vault_redirect.refused_targets";
/// Milliseconds since the state was last confirmed by the poller (gauge, per process).
pub const STATE_AGE_MS: &str = "vault_redirect.state_age_ms";
/// The state version in use (gauge).
pub const STATE_VERSION: &str = "vault_redirect.state_version";

/// Metric ids, `None` where the host refused to define one (metrics never fail a request).
#[derive(Debug, Default)]
pub struct Metrics {
    pub redirects: Option<u32>,
    pub proxied: Option<u32>,
    pub no_active: Option<u32>,
    pub bad_requests: Option<u32>,
    pub pass_through: Option<u32>,
    pub state_updates: Option<u32>,
    pub poll_failures: Option<u32>,
    pub refused_targets: Option<u32>,
    pub state_age_ms: Option<u32>,
    pub state_version: Option<u32>,
}

impl Metrics {
    /// Defines every metric with the host.
    pub fn define() -> Self {
        let counter = |name| host::define_metric(MetricType::Counter, name).ok();
        let gauge = |name| host::define_metric(MetricType::Gauge, name).ok();
        Metrics {
            redirects: counter(REDIRECTS),
            proxied: counter(PROXIED),
            no_active: counter(NO_ACTIVE),
            bad_requests: counter(BAD_REQUESTS),
            pass_through: counter(PASS_THROUGH),
            state_updates: counter(STATE_UPDATES),
            poll_failures: counter(POLL_FAILURES),
            refused_targets: counter(REFUSED_TARGETS),
            state_age_ms: gauge(STATE_AGE_MS),
            state_version: gauge(STATE_VERSION),
        }
    }
}

/// Adds one to a counter when it exists.
pub fn bump(id: Option<u32>) {
    if let Some(id) = id {
        host::increment_metric(id, 1);
    }
}

/// Sets a gauge when it exists.
pub fn set(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        host::record_metric(id, value);
    }
}

/// One worker's request counters, counted in its memory and added to the host's counters on
/// the next tick (`RequestCounts::flush`), so a request makes no metric host call: a call
/// into Envoy per request costs more than a memory increment, and the counters reach
/// Envoy's stats within one tick (500 ms by default), far inside any scrape interval.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub redirects: Cell<u32>,
    pub proxied: Cell<u32>,
    pub no_active: Cell<u32>,
    pub bad_requests: Cell<u32>,
    pub pass_through: Cell<u32>,
}

impl RequestCounts {
    /// Counts one request.
    pub fn count(counter: &Cell<u32>) {
        counter.set(counter.get().saturating_add(1));
    }

    /// Adds what was counted since the last flush to the host's counters and starts again.
    pub fn flush(&self, metrics: &Metrics) {
        for (counter, id) in [
            (&self.redirects, metrics.redirects),
            (&self.proxied, metrics.proxied),
            (&self.no_active, metrics.no_active),
            (&self.bad_requests, metrics.bad_requests),
            (&self.pass_through, metrics.pass_through),
        ] {
            let n = counter.replace(0);
            if let (true, Some(id)) = (n > 0, id) {
                host::increment_metric(id, i64::from(n));
            }
        }
    }
}
