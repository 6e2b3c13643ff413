//! Every Prometheus metric the poller exports, named and described once, here.
//!
//! Owns the registry and the encoding. Gauges that depend on the clock (state age, time since
//! the last good Consul answer) are set from the current snapshot at scrape time, so they are
//! never stale and cost nothing between scrapes.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// What happened.
    pub outcome: &'static str,
}

/// The poller's metrics.
pub struct Metrics {
    registry: Registry,
    /// Consul requests by outcome: `changed`, `unchanged`, `unreachable`, `timeout`, `acl`,
    /// `http_error`, `malformed`.
    pub consul_requests: Family<Outcome, Counter>,
    /// Seconds per Consul request (blocking requests include the time Consul held them).
    pub consul_latency: Histogram,
    /// Times the chosen active node changed (including to and from none).
    pub active_changes: Counter,
    /// Seconds since the state document's version last changed.
    pub state_age: Gauge<f64, AtomicU64>,
    /// Seconds since the poller last knew its view matched Consul.
    pub since_consul_ok: Gauge<f64, AtomicU64>,
    /// Open long-polls on `/v1/active`.
    pub longpoll_waiters: Gauge,
    /// Nodes that qualified as active in the last Consul answer (more than 1: stale tags).
    pub active_candidates: Gauge,
    /// Active-tagged nodes refused because their address is not a valid redirect target.
    pub refused_targets: Counter,
    /// Standalone-mode answers by outcome: `redirect`, `no_active`, `bad_request`, `too_long`.
    pub redirects: Family<Outcome, Counter>,
}

impl Metrics {
    /// Registers every metric under the `vault_redirect` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vault_redirect");
        let consul_requests = Family::<Outcome, Counter>::default();
        registry.register("consul_requests", "Consul health requests by outcome", consul_requests.clone());
        // From 1 ms (a change answered at once) to 11 min (a full 10 m wait plus jitter).
        let buckets = [0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 120.0, 330.0, 660.0];
        let consul_latency = Histogram::new(buckets);
        registry.register(
            "consul_request_duration_seconds",
            "Duration of Consul health requests, including the time a blocking query was held",
            consul_latency.clone(),
        );
        let active_changes = Counter::default();
        registry.register("active_changes", "Changes of the chosen active Vault node", active_changes.clone());
        let state_age = Gauge::<f64, AtomicU64>::default();
        registry.register("state_age_seconds", "Seconds since the state document last changed", state_age.clone());
        let since_consul_ok = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "consul_last_ok_age_seconds",
            "Seconds since the poller last knew its view matched Consul",
            since_consul_ok.clone(),
        );
        let longpoll_waiters = Gauge::default();
        registry.register("longpoll_waiters", "Open long-poll requests on /v1/active", longpoll_waiters.clone());
        let active_candidates = Gauge::default();
        registry.register(
            "active_candidates",
            "Nodes qualifying as active in the last Consul answer; above 1 means stale active tags",
            active_candidates.clone(),
        );
        let refused_targets = Counter::default();
        registry.register(
            "refused_targets",
            "Active-tagged nodes refused because their address is not a valid redirect target",
            refused_targets.clone(),
        );
        let redirects = Family::<Outcome, Counter>::default();
        registry.register("redirect_responses", "Standalone-mode responses by outcome", redirects.clone());
        Metrics {
            registry,
            consul_requests,
            consul_latency,
            active_changes,
            state_age,
            since_consul_ok,
            longpoll_waiters,
            active_candidates,
            refused_targets,
            redirects,
        }
    }

    /// Counts one Consul request.
    pub fn consul_request(&self, outcome: &'static str, seconds: f64) {
        self.consul_requests.get_or_create(&Outcome { outcome }).inc();
        self.consul_latency.observe(seconds);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
