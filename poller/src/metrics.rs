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

/// The `source` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source of truth (`--source`).
    pub source: &'static str,
}

/// The `node` and `outcome` labels of the vault source's probes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeOutcome {
    /// The probed node, `host:port` as in `--vault-node`.
    pub node: String,
    /// Its state by `sys/health`: `active`, `standby`, `perf_standby`, `dr_secondary`,
    /// `sealed`, `not_initialized`, `unreachable`.
    pub outcome: &'static str,
}

/// The poller's metrics.
pub struct Metrics {
    registry: Registry,
    /// 1 for the source of truth this poller runs (`source` label), so dashboards and alerts
    /// can tell sources apart.
    pub source: Family<SourceLabel, Gauge>,
    /// Consul requests by outcome: `changed`, `unchanged`, `unreachable`, `timeout`, `acl`,
    /// `http_error`, `malformed`.
    pub consul_requests: Family<Outcome, Counter>,
    /// The Kubernetes source's list and watch outcomes: `listed`, `event`, and the failures
    /// `unauthorized`, `forbidden`, `gone`, `hung`, `unreachable`.
    pub kubernetes_watch: Family<Outcome, Counter>,
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
    /// Long-polls answered at once because `--max-waiters` were already parked.
    pub longpoll_over_limit: Counter,
    /// Nodes that qualified as active in the last Consul answer (more than 1: stale tags).
    pub active_candidates: Gauge,
    /// Active-tagged nodes refused because their address is not a valid redirect target.
    pub refused_targets: Counter,
    /// Standalone-mode answers by outcome: `redirect`, `no_active`, `bad_request`, `too_long`.
    pub redirects: Family<Outcome, Counter>,
    /// 1 while an active node is served, 0 while there is none (alerts time the gap).
    pub active_node: Gauge,
    /// `--max-stale` in seconds, so alert rules compare the Consul age against the bound this
    /// poller actually runs with.
    pub max_stale: Gauge<f64, AtomicU64>,
    /// The vault source's `sys/health` probes by node and by what the node answered.
    pub vault_probes: Family<NodeOutcome, Counter>,
    /// Seconds per `sys/health` probe of the vault source (a timeout counts its full bound).
    pub vault_probe_latency: Histogram,
    /// Probe rounds of the vault source in which more than one node answered 200.
    pub vault_multiple_active: Counter,
}

impl Metrics {
    /// Registers every metric under the `vault_redirect` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vault_redirect");
        let source = Family::<SourceLabel, Gauge>::default();
        registry.register(
            "source_info",
            "The source of truth this poller learns the active node from (always 1)",
            source.clone(),
        );
        let consul_requests = Family::<Outcome, Counter>::default();
        registry.register(
            "consul_requests",
            "Consul health requests by outcome",
            consul_requests.clone(),
        );
        let kubernetes_watch = Family::<Outcome, Counter>::default();
        registry.register(
            "kubernetes_watch",
            "Kubernetes list and watch outcomes: listed, event, unauthorized, forbidden, gone, hung, unreachable",
            kubernetes_watch.clone(),
        );
        // From 1 ms (a change answered at once) to 11 min (a full 10 m wait plus jitter).
        let buckets = [0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 120.0, 330.0, 660.0];
        let consul_latency = Histogram::new(buckets);
        registry.register(
            "consul_request_duration_seconds",
            "Duration of Consul health requests, including the time a blocking query was held",
            consul_latency.clone(),
        );
        let active_changes = Counter::default();
        registry.register(
            "active_changes",
            "Changes of the chosen active Vault node",
            active_changes.clone(),
        );
        let state_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "state_age_seconds",
            "Seconds since the state document last changed",
            state_age.clone(),
        );
        let since_consul_ok = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "consul_last_ok_age_seconds",
            "Seconds since the poller last knew its view matched Consul",
            since_consul_ok.clone(),
        );
        let longpoll_waiters = Gauge::default();
        registry.register(
            "longpoll_waiters",
            "Open long-poll requests on /v1/active",
            longpoll_waiters.clone(),
        );
        let longpoll_over_limit = Counter::default();
        registry.register(
            "longpoll_over_limit",
            "Long-polls answered at once because --max-waiters long-polls were already parked",
            longpoll_over_limit.clone(),
        );
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
        registry.register(
            "redirect_responses",
            "Standalone-mode responses by outcome",
            redirects.clone(),
        );
        let active_node = Gauge::default();
        registry.register(
            "active_node",
            "1 while an active Vault node is served, 0 while there is none",
            active_node.clone(),
        );
        let max_stale = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "max_stale_seconds",
            "The configured --max-stale: how long the last known node is served while Consul fails",
            max_stale.clone(),
        );
        let vault_probes = Family::<NodeOutcome, Counter>::default();
        registry.register(
            "vault_probes",
            "sys/health probes of the vault source by node and answer",
            vault_probes.clone(),
        );
        // From 1 ms (a warm loopback probe) to 60 s (the longest --vault-probe-timeout).
        let vault_probe_latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0,
        ]);
        registry.register(
            "vault_probe_duration_seconds",
            "Duration of the vault source's sys/health probes",
            vault_probe_latency.clone(),
        );
        let vault_multiple_active = Counter::default();
        registry.register(
            "vault_multiple_active",
            "Probe rounds of the vault source in which more than one node answered 200",
            vault_multiple_active.clone(),
        );
        Metrics {
            registry,
            source,
            consul_requests,
            kubernetes_watch,
            consul_latency,
            active_changes,
            state_age,
            since_consul_ok,
            longpoll_waiters,
            longpoll_over_limit,
            active_candidates,
            refused_targets,
            redirects,
            active_node,
            max_stale,
            vault_probes,
            vault_probe_latency,
            vault_multiple_active,
        }
    }

    /// Counts one `sys/health` probe of `node` that found it `outcome`.
    pub fn vault_probe(&self, node: &str, outcome: &'static str, seconds: f64) {
        self.vault_probes.get_or_create(&NodeOutcome { node: node.to_string(), outcome }).inc();
        self.vault_probe_latency.observe(seconds);
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

    /// The same metrics in Prometheus' text format 0.0.4, for clients that ask for
    /// `text/plain` (promtool, older scrapers): see [`openmetrics_to_text`].
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }
}

/// Rewrites this crate's OpenMetrics text as Prometheus text format 0.0.4.
///
/// The two differ, for what `prometheus-client` writes, only in counters (OpenMetrics names
/// the family `x` and its sample `x_total`; the text format names both `x_total`, and its
/// parsers see a `# TYPE x counter` followed by `x_total` as two metrics, one without help),
/// in `# UNIT` lines and in the closing `# EOF`, which the text format does not have.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counter_families_after_their_samples_and_has_no_eof() {
        let m = Metrics::new();
        m.consul_request("changed", 0.01);
        m.active_changes.inc();
        let text = m.encode_text();
        assert!(text.contains("# TYPE vault_redirect_consul_requests_total counter\n"), "{text}");
        assert!(text.contains("# HELP vault_redirect_active_changes_total Changes"), "{text}");
        assert!(
            text.contains("vault_redirect_consul_requests_total{outcome=\"changed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE vault_redirect_consul_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE vault_redirect_longpoll_waiters gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        // Every sample line belongs to a family announced with the same name (or a histogram's).
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|r| r.split(' ').next())
            .collect();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap_or_default();
            let ok = families.iter().any(|f| {
                name == *f
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(*f))
            });
            assert!(ok, "{name} has no family in\n{text}");
        }
    }
}
