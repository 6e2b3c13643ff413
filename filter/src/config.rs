//! The plugin configuration: parsed and validated once in `on_configure`, then shared read-only
//! by the root context and every request.
//!
//! A bad value fails configuration with a message naming the field and the value, so Envoy
//! rejects the filter instead of running it half-configured.

use std::time::Duration;

use serde::Deserialize;
use vault_redirect_core::{HostChoice, RedirectPolicy, Scheme};

/// What to do with a request while no usable active node is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum NoActive {
    /// Answer 503 with `Retry-After` and a Vault-style JSON error body.
    #[default]
    #[serde(rename = "503")]
    Reject,
    /// Let the request continue to the route's upstream (for example a Vault load balancer).
    #[serde(rename = "pass_through")]
    PassThrough,
}

/// The JSON document in the plugin configuration, as users write it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    poller_cluster: String,
    #[serde(default = "default_poller_authority")]
    poller_authority: String,
    #[serde(default = "default_poller_path")]
    poller_path: String,
    #[serde(default = "default_wait_seconds")]
    wait_seconds: u64,
    #[serde(default = "default_retry_initial_ms")]
    retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    retry_max_ms: u64,
    #[serde(default)]
    scheme: Scheme,
    #[serde(default)]
    target_host: HostChoice,
    #[serde(default)]
    target_port: Option<u16>,
    #[serde(default = "default_max_stale_seconds")]
    max_stale_seconds: u64,
    #[serde(default)]
    no_active: NoActive,
    #[serde(default)]
    pass_through_paths: Vec<String>,
    #[serde(default)]
    debug_header: bool,
    #[serde(default = "default_tick_ms")]
    tick_ms: u64,
}

fn default_poller_authority() -> String {
    "vault-redirect-poller".to_string()
}
fn default_poller_path() -> String {
    "/v1/active".to_string()
}
fn default_wait_seconds() -> u64 {
    30
}
fn default_retry_initial_ms() -> u64 {
    250
}
fn default_retry_max_ms() -> u64 {
    5_000
}
fn default_max_stale_seconds() -> u64 {
    120
}
fn default_tick_ms() -> u64 {
    500
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterConfig {
    /// The Envoy cluster of the poller(s).
    pub poller_cluster: String,
    /// `:authority` sent to the poller.
    pub poller_authority: String,
    /// The poller's state path, without query.
    pub poller_path: String,
    /// How long one long-poll may be held by the poller.
    pub wait: Duration,
    /// First delay after a failed poll; doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Largest delay between failed polls.
    pub retry_max: Duration,
    /// How a state becomes a `Location`.
    pub policy: RedirectPolicy,
    /// How long a state stays usable without word from the poller.
    pub max_stale: Duration,
    /// What to do without an active node.
    pub no_active: NoActive,
    /// Paths answered by the upstream instead of redirected.
    pub pass_through_paths: Vec<String>,
    /// Adds `x-vault-redirect-state` (version and age) to every answer.
    pub debug_header: bool,
    /// The timer period driving retries, staleness and sibling pick-up.
    pub tick: Duration,
}

/// A configuration that cannot be used; the message names the field and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration is not the expected JSON.
    #[error("plugin configuration is not valid: {0}")]
    Json(String),
    /// A field holds a value outside what the filter can work with.
    #[error("plugin configuration field `{field}` has invalid value {value}: {why}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// The value as given.
        value: String,
        /// What would be accepted.
        why: &'static str,
    },
}

fn bad(field: &'static str, value: impl std::fmt::Debug, why: &'static str) -> ConfigError {
    ConfigError::Field { field, value: format!("{value:?}"), why }
}

impl FilterConfig {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        let header_safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !header_safe(&raw.poller_cluster) {
            return Err(bad("poller_cluster", &raw.poller_cluster, "must be a non-empty Envoy cluster name"));
        }
        if !header_safe(&raw.poller_authority) {
            return Err(bad("poller_authority", &raw.poller_authority, "must be a non-empty host[:port]"));
        }
        if !raw.poller_path.starts_with('/') || raw.poller_path.contains('?') || !header_safe(&raw.poller_path) {
            return Err(bad("poller_path", &raw.poller_path, "must be an absolute path without a query"));
        }
        if !(1..=600).contains(&raw.wait_seconds) {
            return Err(bad("wait_seconds", raw.wait_seconds, "must be between 1 and 600"));
        }
        if raw.retry_initial_ms == 0 || raw.retry_initial_ms > raw.retry_max_ms {
            return Err(bad("retry_initial_ms", raw.retry_initial_ms, "must be at least 1 and at most retry_max_ms"));
        }
        if raw.retry_max_ms > 600_000 {
            return Err(bad("retry_max_ms", raw.retry_max_ms, "must be at most 600000"));
        }
        if raw.target_port == Some(0) {
            return Err(bad("target_port", 0, "must be between 1 and 65535"));
        }
        if raw.max_stale_seconds == 0 {
            return Err(bad("max_stale_seconds", 0, "must be at least 1"));
        }
        if !(10..=60_000).contains(&raw.tick_ms) {
            return Err(bad("tick_ms", raw.tick_ms, "must be between 10 and 60000"));
        }
        if let Some(p) = raw.pass_through_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(bad("pass_through_paths", p, "every entry must start with /"));
        }
        Ok(FilterConfig {
            poller_cluster: raw.poller_cluster,
            poller_authority: raw.poller_authority,
            poller_path: raw.poller_path,
            wait: Duration::from_secs(raw.wait_seconds),
            retry_initial: Duration::from_millis(raw.retry_initial_ms),
            retry_max: Duration::from_millis(raw.retry_max_ms),
            policy: RedirectPolicy { scheme: raw.scheme, host: raw.target_host, port: raw.target_port },
            max_stale: Duration::from_secs(raw.max_stale_seconds),
            no_active: raw.no_active,
            pass_through_paths: raw.pass_through_paths,
            debug_header: raw.debug_header,
            tick: Duration::from_millis(raw.tick_ms),
        })
    }

    /// The configuration a request sees if it arrives before `on_configure` succeeded: it
    /// redirects nowhere, since its view never holds a state.
    pub fn unconfigured() -> Self {
        FilterConfig {
            poller_cluster: String::new(),
            poller_authority: String::new(),
            poller_path: default_poller_path(),
            wait: Duration::from_secs(default_wait_seconds()),
            retry_initial: Duration::from_millis(default_retry_initial_ms()),
            retry_max: Duration::from_millis(default_retry_max_ms()),
            policy: RedirectPolicy::default(),
            max_stale: Duration::from_secs(default_max_stale_seconds()),
            no_active: NoActive::Reject,
            pass_through_paths: Vec::new(),
            debug_header: false,
            tick: Duration::from_millis(default_tick_ms()),
        }
    }

    /// The long-poll timeout given to Envoy: the poller holds a call up to `wait`, so the
    /// call must outlive that, and 0 would mean no timeout at all.
    pub fn call_timeout(&self) -> Duration {
        self.wait + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cluster_is_required_and_defaults_are_documented_values() {
        let c = FilterConfig::parse(br#"{"poller_cluster":"vault_redirect_poller"}"#).unwrap();
        assert_eq!(c.poller_path, "/v1/active");
        assert_eq!(c.wait, Duration::from_secs(30));
        assert_eq!(c.max_stale, Duration::from_secs(120));
        assert_eq!(c.no_active, NoActive::Reject);
        assert_eq!(c.policy, RedirectPolicy::default());
        assert_eq!(c.call_timeout(), Duration::from_secs(35));
    }

    #[test]
    fn every_field_is_read() {
        let c = FilterConfig::parse(
            br#"{"poller_cluster":"p","poller_authority":"poller:8210","poller_path":"/x","wait_seconds":5,
                "retry_initial_ms":10,"retry_max_ms":20,"scheme":"https","target_host":"node","target_port":443,
                "max_stale_seconds":9,"no_active":"pass_through","pass_through_paths":["/healthz"],
                "debug_header":true,"tick_ms":100}"#,
        )
        .unwrap();
        assert_eq!(c.policy, RedirectPolicy { scheme: Scheme::Https, host: HostChoice::Node, port: Some(443) });
        assert_eq!((c.wait, c.retry_initial, c.retry_max), (Duration::from_secs(5), Duration::from_millis(10), Duration::from_millis(20)));
        assert_eq!((c.no_active, c.debug_header, c.tick), (NoActive::PassThrough, true, Duration::from_millis(100)));
        assert_eq!(c.poller_authority, "poller:8210");
        assert_eq!(c.pass_through_paths, vec!["/healthz".to_string()]);
    }

    #[test]
    fn a_bad_value_is_named_with_its_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"poller_cluster":""}"#, "poller_cluster"),
            (br#"{"poller_cluster":"p","wait_seconds":0}"#, "wait_seconds"),
            (br#"{"poller_cluster":"p","poller_path":"v1"}"#, "poller_path"),
            (br#"{"poller_cluster":"p","target_port":0}"#, "target_port"),
            (br#"{"poller_cluster":"p","retry_initial_ms":9000}"#, "retry_initial_ms"),
            (br#"{"poller_cluster":"p","pass_through_paths":["x"]}"#, "pass_through_paths"),
            (br#"{"poller_cluster":"p","tick_ms":1}"#, "tick_ms"),
        ];
        for (json, field) in cases {
            let err = FilterConfig::parse(json).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn typos_unknown_enums_and_garbage_are_refused() {
        for json in [&br#"{"poller_cluster":"p","schem":"https"}"#[..], br#"{"poller_cluster":"p","scheme":"ftp"}"#, b"", b"{", b"null"] {
            assert!(matches!(FilterConfig::parse(json), Err(ConfigError::Json(_))), "{:?}", String::from_utf8_lossy(json));
        }
    }
}
