//! The plugin configuration: parsed and validated once in `on_configure`, then shared read-only
//! by the root context and every request.
//!
//! A bad value fails configuration with a message naming the field and the value, so Envoy
//! rejects the filter instead of running it half-configured.

use std::time::Duration;

use vault_redirect_core::json::Json;
use vault_redirect_core::{HostChoice, RedirectPolicy, Scheme};

/// What to do with a request while no usable active node is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoActive {
    /// Answer 503 with `Retry-After` and a Vault-style JSON error body (`"503"`).
    #[default]
    Reject,
    /// Let the request continue to the route's upstream, e.g. a Vault load balancer (`"pass_through"`).
    PassThrough,
}

/// How a request reaches the active node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Answer 307 to the active node; the client follows it (`"redirect"`).
    #[default]
    Redirect,
    /// Let Envoy forward the request to the active node: the filter overwrites
    /// [`UPSTREAM_HEADER`] with its `ip:port` for an `ORIGINAL_DST` cluster (`"proxy"`).
    Proxy,
}

/// The header an `ORIGINAL_DST` cluster with `use_http_header: true` reads the upstream from
/// (Envoy's default `http_header_name`). In proxy mode the filter always replaces it, so a
/// client's own value never survives to the cluster.
pub const UPSTREAM_HEADER: &str = "x-envoy-original-dst-host";

/// The header the proxy template's TLS cluster names in `override_auto_sni_header`: Envoy's
/// router takes the upstream certificate's expected name from it (and the SNI, when it is a
/// DNS name), before the route removes it from what Vault receives. In proxy mode the filter
/// always replaces it with [`ServerName`] rendered for the active node, so no client chooses
/// the name Envoy verifies.
pub const UPSTREAM_NAME_HEADER: &str = "x-vault-redirect-upstream-name";

/// Every field the configuration may hold; anything else is a typo and refused.
const FIELDS: [&str; 16] = [
    "mode",
    "poller_cluster",
    "poller_authority",
    "poller_path",
    "wait_seconds",
    "retry_initial_ms",
    "retry_max_ms",
    "scheme",
    "target_host",
    "target_port",
    "max_stale_seconds",
    "no_active",
    "pass_through_paths",
    "debug_header",
    "tick_ms",
    "upstream_server_name",
];

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterConfig {
    /// Redirect or proxy.
    pub mode: Mode,
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
    /// The configured scheme; `None` follows the poller's hint (`http` without one).
    pub scheme: Option<Scheme>,
    /// How a state becomes a `Location` (its scheme: configured, else `http`).
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
    /// The name Envoy verifies the active node's certificate against in proxy mode.
    pub upstream_server_name: ServerName,
}

/// The `upstream_server_name` template: literal host-name bytes and the placeholders `{node}`
/// and `{address}` (the state's node name and the host of the address the request goes to).
/// Checked once at configuration; rendered once per state, never per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerName(pub(crate) String);

/// Bytes a server name may hold once rendered: a host name, an IP literal (IPv6 bracketed),
/// optionally `:port` (Envoy drops the port). Nothing that could end or split a header.
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
}

impl ServerName {
    /// Fills in the placeholders; `None` when the result is not a usable name (empty, or a
    /// byte from the state that no host name holds) or the template has an unknown
    /// placeholder (refused at configuration, so only for a template built otherwise).
    pub fn render(&self, node: &str, address: &str) -> Option<String> {
        // Byte by byte: a template is short, and this is lighter in wasm than `str::find`.
        // A `{` that starts no placeholder is copied, and refused below with the other bytes.
        let mut out = Vec::with_capacity(self.0.len() + node.len() + address.len());
        let mut rest = self.0.as_bytes();
        while let [first, tail @ ..] = rest {
            rest = if let Some(after) = rest.strip_prefix(b"{node}") {
                out.extend_from_slice(node.as_bytes());
                after
            } else if let Some(after) = rest.strip_prefix(b"{address}") {
                out.extend_from_slice(address.as_bytes());
                after
            } else {
                out.push(*first);
                tail
            };
        }
        let usable = !out.is_empty() && out.len() <= 255 && out.iter().all(|b| name_byte(*b));
        usable.then(|| String::from_utf8(out).ok()).flatten()
    }
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

const DEFAULT_WAIT_SECONDS: u64 = 30;
const DEFAULT_RETRY_INITIAL_MS: u64 = 250;
const DEFAULT_RETRY_MAX_MS: u64 = 5_000;
const DEFAULT_MAX_STALE_SECONDS: u64 = 120;
const DEFAULT_TICK_MS: u64 = 500;

fn bad(field: &'static str, value: impl Shown, why: &'static str) -> ConfigError {
    ConfigError::Field { field, value: value.shown(), why }
}

/// How a value appears in an error: as the user wrote it, strings quoted and escaped as JSON.
/// (Not `{:?}`: Rust's debug escaping costs kilobytes of wasm for no gain here.)
trait Shown {
    fn shown(&self) -> String;
}

impl Shown for &Json {
    fn shown(&self) -> String {
        match self {
            Json::Str(s) => s.as_str().shown(),
            Json::Num(n) => n.clone(),
            Json::Bool(b) => if *b { "true" } else { "false" }.to_string(),
            other => other.kind().to_string(),
        }
    }
}

impl Shown for &str {
    fn shown(&self) -> String {
        let mut out = String::with_capacity(self.len() + 2);
        vault_redirect_core::json::write_str(&mut out, self);
        out
    }
}

impl Shown for &String {
    fn shown(&self) -> String {
        self.as_str().shown()
    }
}

impl Shown for u64 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl FilterConfig {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let json = Json::parse(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        let Json::Obj(members) = &json else {
            return Err(ConfigError::Json(format!("expected an object, found {}", json.kind())));
        };
        if let Some((key, _)) = members.iter().find(|(k, _)| !FIELDS.contains(&k.as_str())) {
            // Joined, not `{FIELDS:?}`: Debug-printing strs links Rust's escaping and Unicode
            // tables into the module (kilobytes) for this one message.
            return Err(ConfigError::Json(format!(
                "unknown field `{key}`, expected one of: {}",
                FIELDS.join(", ")
            )));
        }
        let field = |name: &str| json.get(name).filter(|v| **v != Json::Null);
        let string = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            match field(name) {
                None => Ok(default.to_string()),
                Some(v) => {
                    v.as_str().map(str::to_string).ok_or_else(|| bad(name, v, "must be a string"))
                }
            }
        };
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match field(name) {
                None => Ok(default),
                Some(v) => v.as_u64().ok_or_else(|| bad(name, v, "must be a non-negative integer")),
            }
        };
        let header_safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());

        let poller_cluster = string("poller_cluster", "")?;
        if !header_safe(&poller_cluster) {
            return Err(bad(
                "poller_cluster",
                &poller_cluster,
                "must be a non-empty Envoy cluster name",
            ));
        }
        let poller_authority = string("poller_authority", "vault-redirect-poller")?;
        if !header_safe(&poller_authority) {
            return Err(bad(
                "poller_authority",
                &poller_authority,
                "must be a non-empty host[:port]",
            ));
        }
        let poller_path = string("poller_path", "/v1/active")?;
        if !poller_path.starts_with('/') || poller_path.contains('?') || !header_safe(&poller_path)
        {
            return Err(bad(
                "poller_path",
                &poller_path,
                "must be an absolute path without a query",
            ));
        }
        let wait_seconds = number("wait_seconds", DEFAULT_WAIT_SECONDS)?;
        if !(1..=600).contains(&wait_seconds) {
            return Err(bad("wait_seconds", wait_seconds, "must be between 1 and 600"));
        }
        let retry_initial_ms = number("retry_initial_ms", DEFAULT_RETRY_INITIAL_MS)?;
        let retry_max_ms = number("retry_max_ms", DEFAULT_RETRY_MAX_MS)?;
        if retry_max_ms == 0 || retry_max_ms > 600_000 {
            return Err(bad("retry_max_ms", retry_max_ms, "must be between 1 and 600000"));
        }
        if retry_initial_ms == 0 || retry_initial_ms > retry_max_ms {
            return Err(bad(
                "retry_initial_ms",
                retry_initial_ms,
                "must be at least 1 and at most retry_max_ms",
            ));
        }
        let scheme = match field("scheme") {
            None => None,
            Some(_) => match string("scheme", "")?.as_str() {
                "http" => Some(Scheme::Http),
                "https" => Some(Scheme::Https),
                other => return Err(bad("scheme", other, "must be \"http\" or \"https\"")),
            },
        };
        let host = match string("target_host", "address")?.as_str() {
            "address" => HostChoice::Address,
            "node" => HostChoice::Node,
            other => return Err(bad("target_host", other, "must be \"address\" or \"node\"")),
        };
        let port = match field("target_port") {
            None => None,
            Some(v) => match v.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) {
                Some(p) => Some(p),
                None => return Err(bad("target_port", v, "must be between 1 and 65535")),
            },
        };
        let max_stale_seconds = number("max_stale_seconds", DEFAULT_MAX_STALE_SECONDS)?;
        if !(1..=86_400).contains(&max_stale_seconds) {
            return Err(bad("max_stale_seconds", max_stale_seconds, "must be between 1 and 86400"));
        }
        let no_active = match string("no_active", "503")?.as_str() {
            "503" => NoActive::Reject,
            "pass_through" => NoActive::PassThrough,
            other => return Err(bad("no_active", other, "must be \"503\" or \"pass_through\"")),
        };
        let pass_through_paths = match field("pass_through_paths") {
            None => Vec::new(),
            Some(Json::Arr(items)) => {
                let mut paths = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(p) if p.starts_with('/') => paths.push(p.to_string()),
                        _ => {
                            return Err(bad(
                                "pass_through_paths",
                                item,
                                "every entry must be a string starting with /",
                            ))
                        }
                    }
                }
                paths
            }
            Some(v) => return Err(bad("pass_through_paths", v, "must be an array of paths")),
        };
        let debug_header = match field("debug_header") {
            None => false,
            Some(Json::Bool(b)) => *b,
            Some(v) => return Err(bad("debug_header", v, "must be true or false")),
        };
        let tick_ms = number("tick_ms", DEFAULT_TICK_MS)?;
        if !(10..=60_000).contains(&tick_ms) {
            return Err(bad("tick_ms", tick_ms, "must be between 10 and 60000"));
        }
        let upstream_server_name = ServerName(string("upstream_server_name", "{address}")?);
        // Rendered with plain stand-ins, the template alone must make a name: this refuses
        // unknown placeholders, an empty template and bytes no host name holds.
        if upstream_server_name.render("n", "a").is_none() {
            return Err(bad(
                "upstream_server_name",
                &upstream_server_name.0,
                "must be a host name, with {node} or {address} in it if needed",
            ));
        }
        let mode = match string("mode", "redirect")?.as_str() {
            "redirect" => Mode::Redirect,
            "proxy" => Mode::Proxy,
            other => return Err(bad("mode", other, "must be \"redirect\" or \"proxy\"")),
        };
        if mode == Mode::Proxy {
            // A request that continues without the upstream header would reach whatever the
            // ORIGINAL_DST cluster falls back to; in proxy mode every request either goes to
            // the active node or is answered here.
            if no_active == NoActive::PassThrough {
                return Err(bad(
                    "no_active",
                    "pass_through",
                    "must be \"503\" in proxy mode (there is no other upstream)",
                ));
            }
            if let Some(first) = pass_through_paths.first() {
                return Err(bad(
                    "pass_through_paths",
                    first,
                    "must be empty in proxy mode (every path goes to the active node)",
                ));
            }
            // ORIGINAL_DST takes an IP literal only; a node name would need DNS at request time.
            if host == HostChoice::Node {
                return Err(bad(
                    "target_host",
                    "node",
                    "must be \"address\" in proxy mode (Envoy connects to an IP address)",
                ));
            }
        }
        Ok(FilterConfig {
            mode,
            poller_cluster,
            poller_authority,
            poller_path,
            wait: Duration::from_secs(wait_seconds),
            retry_initial: Duration::from_millis(retry_initial_ms),
            retry_max: Duration::from_millis(retry_max_ms),
            scheme,
            policy: RedirectPolicy { scheme: scheme.unwrap_or_default(), host, port },
            max_stale: Duration::from_secs(max_stale_seconds),
            no_active,
            pass_through_paths,
            debug_header,
            tick: Duration::from_millis(tick_ms),
            upstream_server_name,
        })
    }

    /// The configuration a request sees if it arrives before `on_configure` succeeded: it
    /// redirects nowhere, since its view never holds a state.
    pub fn unconfigured() -> Self {
        FilterConfig {
            mode: Mode::Redirect,
            poller_cluster: String::new(),
            poller_authority: String::new(),
            poller_path: String::new(),
            wait: Duration::from_secs(DEFAULT_WAIT_SECONDS),
            retry_initial: Duration::from_millis(DEFAULT_RETRY_INITIAL_MS),
            retry_max: Duration::from_millis(DEFAULT_RETRY_MAX_MS),
            scheme: None,
            policy: RedirectPolicy::default(),
            max_stale: Duration::from_secs(DEFAULT_MAX_STALE_SECONDS),
            no_active: NoActive::Reject,
            pass_through_paths: Vec::new(),
            debug_header: false,
            tick: Duration::from_millis(DEFAULT_TICK_MS),
            // Never rendered: an unconfigured filter holds no state.
            upstream_server_name: ServerName(String::new()),
        }
    }

    /// The policy for a state: the configured scheme wins; without one, the poller's hint.
    pub fn policy_for(&self, doc: &vault_redirect_core::StateDoc) -> RedirectPolicy {
        match (self.scheme, doc.scheme) {
            (None, Some(hint)) => RedirectPolicy { scheme: hint, ..self.policy.clone() },
            _ => self.policy.clone(),
        }
    }

    /// How long a held version may go unconfirmed before an older version from the poller is
    /// taken as a reset (Consul index reset) rather than a lagging replica: two long-poll
    /// periods, and never later than the moment the held state goes stale anyway.
    pub fn reset_after(&self) -> Duration {
        (self.wait * 2).min(self.max_stale)
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
        assert_eq!(c.mode, Mode::Redirect);
        assert_eq!(c.upstream_server_name, ServerName("{address}".into()));
        let p = FilterConfig::parse(br#"{"poller_cluster":"p","mode":"proxy"}"#).unwrap();
        assert_eq!(p.mode, Mode::Proxy);
    }

    #[test]
    fn the_upstream_server_name_takes_literals_and_the_two_placeholders_only() {
        let parse = |template: &str| {
            FilterConfig::parse(
                format!(
                    r#"{{"poller_cluster":"p","mode":"proxy","upstream_server_name":"{template}"}}"#
                )
                .as_bytes(),
            )
        };
        for good in
            ["{address}", "{node}", "{node}.vault.example", "vault.example", "a{node}-{address}"]
        {
            let name = parse(good).unwrap().upstream_server_name;
            assert_eq!(name, ServerName(good.into()), "{good}");
        }
        for bad in [
            "",
            "{nodes}",
            "{Node}",
            "{node",
            "node}",
            "{}",
            "{node}/x",
            "a b",
            "{address}\\r\\n",
            "x\\u0000",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("`upstream_server_name`") && err.contains("{node}"),
                "{bad:?}: {err}"
            );
        }
        let err = FilterConfig::parse(br#"{"poller_cluster":"p","upstream_server_name":7}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`upstream_server_name`"), "{err}");
    }

    #[test]
    fn every_field_is_read() {
        let c = FilterConfig::parse(
            br#"{"poller_cluster":"p","poller_authority":"poller:8210","poller_path":"/x","wait_seconds":5,
                "retry_initial_ms":10,"retry_max_ms":20,"scheme":"https","target_host":"node","target_port":443,
                "max_stale_seconds":9,"no_active":"pass_through","pass_through_paths":["/healthz"],
                "debug_header":true,"tick_ms":100,"upstream_server_name":"{node}.vault"}"#,
        )
        .unwrap();
        assert_eq!(
            c.policy,
            RedirectPolicy { scheme: Scheme::Https, host: HostChoice::Node, port: Some(443) }
        );
        assert_eq!(
            (c.wait, c.retry_initial, c.retry_max),
            (Duration::from_secs(5), Duration::from_millis(10), Duration::from_millis(20))
        );
        assert_eq!(
            (c.no_active, c.debug_header, c.tick),
            (NoActive::PassThrough, true, Duration::from_millis(100))
        );
        assert_eq!(c.poller_authority, "poller:8210");
        assert_eq!(c.pass_through_paths, vec!["/healthz".to_string()]);
        assert_eq!(c.upstream_server_name.render("vault-a", "10.0.0.1").unwrap(), "vault-a.vault");
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
            (br#"{"poller_cluster":"p","mode":"tunnel"}"#, "mode"),
            (br#"{"poller_cluster":"p","mode":1}"#, "mode"),
            (br#"{"poller_cluster":"p","mode":"proxy","no_active":"pass_through"}"#, "no_active"),
            (
                br#"{"poller_cluster":"p","mode":"proxy","pass_through_paths":["/x"]}"#,
                "pass_through_paths",
            ),
            (br#"{"poller_cluster":"p","mode":"proxy","target_host":"node"}"#, "target_host"),
        ];
        for (json, field) in cases {
            let err = FilterConfig::parse(json).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn typos_unknown_enums_and_garbage_are_refused() {
        for json in [&br#"{"poller_cluster":"p","schem":"https"}"#[..], b"", b"{", b"null", b"[]"] {
            assert!(
                matches!(FilterConfig::parse(json), Err(ConfigError::Json(_))),
                "{:?}",
                String::from_utf8_lossy(json)
            );
        }
        let err = FilterConfig::parse(br#"{"poller_cluster":"p","scheme":"ftp"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`scheme`") && err.contains("ftp"), "{err}");
        let err = FilterConfig::parse(br#"{"poller_cluster":"p","wait_seconds":"30"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`wait_seconds`"), "{err}");
    }
}
