//! The poller's configuration: every flag, its environment twin and its default, and the
//! start-up validation that turns flags into settings the rest of the crate can trust.
//!
//! Consul settings use Consul's own environment names (`CONSUL_HTTP_ADDR`,
//! `CONSUL_HTTP_TOKEN`, `CONSUL_CACERT`...), so a host already set up for the `consul` CLI
//! needs nothing more. The token never appears in `Debug` output or in an error.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

use crate::duration;
use crate::source_kind::SourceKind;

/// Consul refuses longer blocking waits (blocking.mdx): it would clamp them silently.
pub const MAX_CONSUL_WAIT: Duration = Duration::from_secs(10 * 60);

/// A secret from the command line or environment; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// The redirect's scheme in standalone mode (Consul does not record Vault's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

/// Which name of the active node goes into a standalone-mode `Location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HostArg {
    /// The service address (the host of Vault's `api_addr`).
    Address,
    /// The Consul node name (vault-redirector's default).
    Node,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// What to do instead of running the daemon (which needs no subcommand).
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Print a running poller's status as a table (the facts of its status page) and exit
    /// 0 when it serves an active node with no problem, 1 when it serves one with problems,
    /// 2 when it serves none, 3 when it cannot be asked.
    Status(StatusArgs),
}

/// Flags of `status`.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// The poller's state API: host:port or http(s)://host:port (default: the daemon's own
    /// --listen address, from the same environment variable).
    #[arg(long, env = "VAULT_REDIRECT_LISTEN", default_value = "127.0.0.1:8210")]
    pub addr: String,

    /// How long to wait for the poller's answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print the status document as JSON instead of a table (same exit codes).
    #[arg(long)]
    pub json: bool,
}

/// What `--version` prints after the name: the workspace's version (Cargo.toml, the one
/// place it lives) and the commit built (poller/build.rs).
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("VAULT_REDIRECT_GIT_COMMIT"), ")");

/// Tracks Consul's health view of Vault and tells filters (and, in standalone mode, clients)
/// which Vault node is active.
#[derive(Clone, Debug, Parser)]
#[command(name = "vault-redirect-poller", version = VERSION, about, long_about = None)]
pub struct Config {
    /// Without a subcommand, the poller runs as a daemon.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Where the poller learns which Vault node is active: `consul` (Vault's service
    /// registration in Consul), `vault` (every node's sys/health, see the --vault-* flags) or
    /// `kubernetes` (the Vault pods' labels, see the --k8s-* flags).
    #[arg(long, env = "VAULT_REDIRECT_SOURCE", value_enum, default_value = "consul")]
    pub source: SourceKind,

    /// The vault source's flags.
    #[command(flatten)]
    pub vault: VaultArgs,

    /// The Kubernetes source's flags (--k8s-*).
    #[command(flatten)]
    pub kubernetes: crate::kubernetes_flags::KubernetesArgs,

    /// The Kubernetes source's in-cluster settings (from the kubelet's environment).
    #[command(flatten)]
    pub k8s_in_cluster: crate::kubernetes_flags::InClusterArgs,

    /// Consul HTTP API address: http://host:port, https://host:port, or a bare host:port
    /// (then https when CONSUL_HTTP_SSL is true).
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = "http://127.0.0.1:8500")]
    pub consul_addr: String,

    /// Use https for a bare host:port Consul address.
    #[arg(long, env = "CONSUL_HTTP_SSL", action = ArgAction::Set, value_parser = BoolishValueParser::new(),
          default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub consul_ssl: bool,

    /// Verify Consul's TLS certificate (set false only for tests).
    #[arg(long, env = "CONSUL_HTTP_SSL_VERIFY", action = ArgAction::Set, value_parser = BoolishValueParser::new(),
          default_value = "true", num_args = 0..=1, default_missing_value = "true")]
    pub consul_ssl_verify: bool,

    /// Consul ACL token, sent as X-Consul-Token. Needs service:read and node:read on the
    /// Vault service.
    #[arg(long, env = "CONSUL_HTTP_TOKEN", hide_env_values = true)]
    pub consul_token: Option<Secret>,

    /// File holding the Consul ACL token (used when --consul-token is not set).
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE")]
    pub consul_token_file: Option<PathBuf>,

    /// PEM CA certificate to verify Consul's TLS certificate.
    #[arg(long, env = "CONSUL_CACERT")]
    pub consul_cacert: Option<PathBuf>,

    /// PEM client certificate for Consul mutual TLS (with --consul-client-key).
    #[arg(long, env = "CONSUL_CLIENT_CERT")]
    pub consul_client_cert: Option<PathBuf>,

    /// PEM private key for Consul mutual TLS (with --consul-client-cert).
    #[arg(long, env = "CONSUL_CLIENT_KEY")]
    pub consul_client_key: Option<PathBuf>,

    /// Consul datacenter to query (default: the agent's own).
    #[arg(long, env = "VAULT_REDIRECT_CONSUL_DC")]
    pub consul_dc: Option<String>,

    /// Consul service name Vault registers under (Vault's `service` option).
    #[arg(long, env = "VAULT_REDIRECT_SERVICE", default_value = "vault")]
    pub service: String,

    /// Service tag that marks the active node.
    #[arg(long, env = "VAULT_REDIRECT_ACTIVE_TAG", default_value = "active")]
    pub active_tag: String,

    /// Allow stale reads: any Consul server answers, without a round trip to the leader, and
    /// answers keep coming while the cluster has no leader.
    #[arg(long, env = "VAULT_REDIRECT_CONSUL_STALE", action = ArgAction::Set, value_parser = BoolishValueParser::new(),
          default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub consul_stale: bool,

    /// How long each Consul blocking query may wait for a change (Consul adds up to 1/16 of
    /// jitter; at most 10m). A hung Consul is noticed after about this long.
    #[arg(long, env = "VAULT_REDIRECT_CONSUL_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub consul_wait: Duration,

    /// Timeout to connect to Consul and for non-blocking requests; blocking requests get
    /// wait + wait/16 + this.
    #[arg(long, env = "VAULT_REDIRECT_CONSUL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub consul_timeout: Duration,

    /// Longest pause between retries after Consul errors (the pause doubles from 250ms).
    #[arg(long, env = "VAULT_REDIRECT_BACKOFF_MAX", default_value = "30s", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// How long to keep serving the last known active node while Consul is unreachable or
    /// answers garbage; then no active node.
    #[arg(long, env = "VAULT_REDIRECT_MAX_STALE", default_value = "60s", value_parser = parse_duration)]
    pub max_stale: Duration,

    /// Most long-polls parked at once on /v1/active; past it a long-poll is answered at once
    /// (the filter then paces itself) instead of holding another connection and its memory.
    #[arg(long, env = "VAULT_REDIRECT_MAX_WAITERS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_waiters: u64,

    /// Address of the state API (/v1/active, /health, /metrics).
    #[arg(long, env = "VAULT_REDIRECT_LISTEN", default_value = "127.0.0.1:8210")]
    pub listen: SocketAddr,

    /// Also answer client requests on this address with 307 redirects to the active node
    /// (standalone mode, a drop-in for vault-redirector).
    #[arg(long, env = "VAULT_REDIRECT_REDIRECT_LISTEN")]
    pub redirect_listen: Option<SocketAddr>,

    /// Scheme of standalone-mode redirects.
    #[arg(long, env = "VAULT_REDIRECT_SCHEME", value_enum, default_value = "http")]
    pub redirect_scheme: SchemeArg,

    /// Name of the active node in standalone-mode redirects.
    #[arg(long, env = "VAULT_REDIRECT_HOST", value_enum, default_value = "address")]
    pub redirect_host: HostArg,

    /// Port of standalone-mode redirects (default: the port Vault registered).
    #[arg(long, env = "VAULT_REDIRECT_PORT")]
    pub redirect_port: Option<u16>,

    /// Serve --redirect-listen over TLS (HTTP/1.1 and h2 by ALPN) with this PEM certificate
    /// chain, leaf first (vault-redirector's -c/--cert-path). Needs --redirect-tls-key.
    /// Independent of --redirect-scheme, which is the scheme of the Location sent.
    #[arg(long, env = "VAULT_REDIRECT_TLS_CERT")]
    pub redirect_tls_cert: Option<PathBuf>,

    /// PEM private key of --redirect-tls-cert (vault-redirector's -k/--key-path).
    #[arg(long, env = "VAULT_REDIRECT_TLS_KEY")]
    pub redirect_tls_key: Option<PathBuf>,

    /// Log filter (env_logger syntax: error, warn, info, debug, trace, or per module).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// Start with logging off; SIGUSR1 turns it on, SIGUSR2 off again.
    #[arg(long, env = "VAULT_REDIRECT_LOG_DISABLE", action = ArgAction::Set, value_parser = BoolishValueParser::new(),
          default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub log_disable: bool,
}

/// The shortest probe interval: below it the probes, not Vault, would be the load.
pub const MIN_VAULT_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Flags of the `vault` source (used with `--source vault`).
#[derive(Clone, Debug, Args)]
pub struct VaultArgs {
    /// A Vault node's API address, scheme://host:port, as the poller reaches it. Repeat the
    /// flag for every node of the cluster (the environment variable is comma-separated).
    #[arg(
        long = "vault-node",
        value_name = "URL",
        env = "VAULT_REDIRECT_VAULT_NODES",
        value_delimiter = ','
    )]
    pub vault_nodes: Vec<String>,

    /// How often every node's sys/health is probed (all nodes at once). Each poller replica
    /// sends one sys/health per node per interval, plus one sys/leader to the active node:
    /// at 500ms, 2 requests per second to each standby and 4 to the active node.
    #[arg(long, env = "VAULT_REDIRECT_VAULT_PROBE_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub vault_probe_interval: Duration,

    /// How long one probe may take, connect and TLS included. A node that does not answer
    /// within it counts as unreachable for that round, and a late 200 is never taken.
    #[arg(long, env = "VAULT_REDIRECT_VAULT_PROBE_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub vault_probe_timeout: Duration,

    /// PEM CA bundle that signs Vault's certificates (default: the Mozilla roots).
    #[arg(long, env = "VAULT_CACERT")]
    pub vault_cacert: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with Vault (with --vault-client-key).
    #[arg(long, env = "VAULT_CLIENT_CERT")]
    pub vault_client_cert: Option<PathBuf>,

    /// PEM private key of --vault-client-cert.
    #[arg(long, env = "VAULT_CLIENT_KEY")]
    pub vault_client_key: Option<PathBuf>,

    /// Check Vault's certificate against this name instead of each node's host (nodes
    /// probed by IP behind one certificate name).
    #[arg(long, env = "VAULT_TLS_SERVER_NAME")]
    pub vault_tls_server_name: Option<String>,

    /// Do not check Vault's certificate (tests only).
    #[arg(long, env = "VAULT_SKIP_VERIFY", action = ArgAction::Set, value_parser = BoolishValueParser::new(),
          default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub vault_skip_verify: bool,
}

/// Why the configuration cannot be used; each message names the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The Consul address is not a URL or host:port.
    #[error("invalid Consul address {value:?}: {why}")]
    ConsulAddr {
        /// The address as given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// The service name is empty or holds characters Vault refuses (RFC 1123 labels).
    #[error("invalid service name {0:?}: use letters, digits and dashes")]
    Service(String),
    /// The active tag is empty.
    #[error("invalid active tag {0:?}: must not be empty")]
    ActiveTag(String),
    /// The datacenter name holds characters that have no place in a query string.
    #[error("invalid datacenter {0:?}: use letters, digits, dashes, dots and underscores")]
    Datacenter(String),
    /// A duration is outside what makes sense for it.
    #[error("invalid {flag} {value}: {why}")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// The allowed range.
        why: &'static str,
    },
    /// Only one of the client certificate and key was given.
    #[error("--consul-client-cert and --consul-client-key go together; only {0} was given")]
    ClientPair(&'static str),
    /// Only one of the redirect listener's certificate and key was given.
    #[error("--redirect-tls-cert and --redirect-tls-key go together; only {0} was given")]
    RedirectTlsPair(&'static str),
    /// TLS was asked for without a redirect listener to serve it on.
    #[error("--redirect-tls-cert and --redirect-tls-key need --redirect-listen (the state API on --listen stays plain HTTP)")]
    RedirectTlsWithoutListen,
    /// A file could not be read.
    #[error("cannot read {what} {path:?}: {source}")]
    File {
        /// What the file was for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file could not be used.
    #[error("cannot use {what} {path:?}: {why}")]
    Pem {
        /// What the file was for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The TLS library's complaint.
        why: String,
    },
    /// `--source vault` without any `--vault-node`.
    #[error("--source vault needs at least one --vault-node (or VAULT_REDIRECT_VAULT_NODES)")]
    NoVaultNodes,
    /// A `--vault-node` is not `scheme://host:port`, or is given twice.
    #[error("invalid --vault-node {0}")]
    VaultNode(String),
    /// Only one of Vault's client certificate and key was given.
    #[error("VAULT_CLIENT_CERT and VAULT_CLIENT_KEY (--vault-client-cert, --vault-client-key) go together; only {0} was given")]
    VaultClientPair(&'static str),
    /// `VAULT_TLS_SERVER_NAME` is not a DNS name or IP address.
    #[error("invalid VAULT_TLS_SERVER_NAME {0:?}: not a DNS name or IP address")]
    VaultServerName(String),
    /// The TLS library or the HTTP client refused the Vault TLS configuration.
    #[error("cannot build the Vault client: {0}")]
    VaultClient(String),
    /// The Kubernetes source's flags are not usable.
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes_flags::FlagError),
    /// The Kubernetes source cannot be set up (service-account files, kubeconfig).
    #[error("{0}")]
    KubernetesSetup(String),
    /// The two listen addresses are the same.
    #[error("--listen and --redirect-listen are both {0}; use two addresses")]
    SameListen(SocketAddr),
}

impl Config {
    /// The Consul base URL: the address with a scheme, ending without a slash.
    pub fn consul_url(&self) -> Result<Url, ConfigError> {
        let value = self.consul_addr.trim();
        let bad = |why: String| ConfigError::ConsulAddr { value: self.consul_addr.clone(), why };
        if value.is_empty() {
            return Err(bad("empty".into()));
        }
        let with_scheme = if value.contains("://") {
            value.to_string()
        } else if self.consul_ssl {
            format!("https://{value}")
        } else {
            format!("http://{value}")
        };
        let url = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(bad(format!("scheme {:?} is not http or https", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host".into()));
        }
        if !(url.path() == "/" || url.path().is_empty()) || url.query().is_some() {
            return Err(bad("must be scheme://host:port with no path or query".into()));
        }
        Ok(url)
    }

    /// Checks everything that can be checked without the network, naming the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.consul_url()?;
        let label_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !label_ok(&self.service) {
            return Err(ConfigError::Service(self.service.clone()));
        }
        if self.active_tag.trim().is_empty() {
            return Err(ConfigError::ActiveTag(self.active_tag.clone()));
        }
        if let Some(dc) = &self.consul_dc {
            if dc.is_empty()
                || !dc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(ConfigError::Datacenter(dc.clone()));
            }
        }
        let dur = |flag, d: Duration, ok: bool, why| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Duration { flag, value: duration::display(d), why })
            }
        };
        let w = self.consul_wait;
        dur(
            "--consul-wait",
            w,
            w >= Duration::from_millis(100) && w <= MAX_CONSUL_WAIT,
            "must be between 100ms and 10m",
        )?;
        let t = self.consul_timeout;
        dur("--consul-timeout", t, t >= Duration::from_millis(100), "must be at least 100ms")?;
        let b = self.backoff_max;
        dur("--backoff-max", b, b >= Duration::from_millis(250), "must be at least 250ms")?;
        let s = self.max_stale;
        dur("--max-stale", s, !s.is_zero(), "must be more than 0")?;
        match (&self.consul_client_cert, &self.consul_client_key) {
            (Some(_), None) => return Err(ConfigError::ClientPair("--consul-client-cert")),
            (None, Some(_)) => return Err(ConfigError::ClientPair("--consul-client-key")),
            _ => {}
        }
        match (&self.redirect_tls_cert, &self.redirect_tls_key) {
            (Some(_), None) => return Err(ConfigError::RedirectTlsPair("--redirect-tls-cert")),
            (None, Some(_)) => return Err(ConfigError::RedirectTlsPair("--redirect-tls-key")),
            (Some(_), Some(_)) if self.redirect_listen.is_none() => {
                return Err(ConfigError::RedirectTlsWithoutListen)
            }
            _ => {}
        }
        if self.source == SourceKind::Vault {
            self.validate_vault(&dur)?;
        }
        if Some(self.listen) == self.redirect_listen && self.listen.port() != 0 {
            return Err(ConfigError::SameListen(self.listen));
        }
        Ok(())
    }

    /// The vault source's checks that need no parsing of its own types (the nodes are read by
    /// the source, which names a bad one the same way).
    fn validate_vault(
        &self,
        dur: &impl Fn(&'static str, Duration, bool, &'static str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let v = &self.vault;
        if v.vault_nodes.iter().all(|n| n.trim().is_empty()) {
            return Err(ConfigError::NoVaultNodes);
        }
        let i = v.vault_probe_interval;
        dur(
            "--vault-probe-interval",
            i,
            i >= MIN_VAULT_PROBE_INTERVAL && i <= Duration::from_secs(60),
            "must be between 50ms and 60s",
        )?;
        let t = v.vault_probe_timeout;
        dur(
            "--vault-probe-timeout",
            t,
            t >= Duration::from_millis(10) && t <= Duration::from_secs(60),
            "must be between 10ms and 60s",
        )?;
        match (&v.vault_client_cert, &v.vault_client_key) {
            (Some(_), None) => Err(ConfigError::VaultClientPair("VAULT_CLIENT_CERT")),
            (None, Some(_)) => Err(ConfigError::VaultClientPair("VAULT_CLIENT_KEY")),
            _ => Ok(()),
        }
    }

    /// The token to send: `--consul-token`, else the trimmed content of `--consul-token-file`.
    pub fn token(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(t) = &self.consul_token {
            if !t.0.is_empty() {
                return Ok(Some(t.clone()));
            }
        }
        match &self.consul_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                    what: "Consul token file",
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim();
                Ok((!token.is_empty()).then(|| Secret(token.to_string())))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["vault-redirect-poller"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn a_bare_host_port_becomes_an_http_url_or_https_with_consul_http_ssl() {
        let c = parse(&["--consul-addr", "10.0.0.9:8500"]);
        assert_eq!(c.consul_url().unwrap().as_str(), "http://10.0.0.9:8500/");
        let c = parse(&["--consul-addr", "10.0.0.9:8501", "--consul-ssl"]);
        assert_eq!(c.consul_url().unwrap().as_str(), "https://10.0.0.9:8501/");
        let c = parse(&["--consul-addr", "https://consul.example:8501"]);
        assert_eq!(c.consul_url().unwrap().scheme(), "https");
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let cases: &[(&[&str], &str)] = &[
            (&["--consul-addr", "ftp://x:1"], "ftp://x:1"),
            (&["--consul-addr", "http://x:1/v1"], "http://x:1/v1"),
            (&["--service", "va ult"], "va ult"),
            (&["--active-tag", ""], "\"\""),
            (&["--consul-dc", "dc1&x=y"], "dc1&x=y"),
            (&["--consul-wait", "11m"], "11m"),
            (&["--max-stale", "0"], "--max-stale"),
            (&["--consul-client-cert", "/c.pem"], "--consul-client-cert"),
            (
                &["--redirect-listen", "127.0.0.1:0", "--redirect-tls-key", "/k.pem"],
                "only --redirect-tls-key",
            ),
            (
                &["--redirect-tls-cert", "/c.pem", "--redirect-tls-key", "/k.pem"],
                "need --redirect-listen",
            ),
        ];
        for (args, needle) in cases {
            let err = parse(args).validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn an_unparsable_duration_is_refused_by_the_parser_with_its_text() {
        let err = Config::try_parse_from(["p", "--max-stale", "ten"]).unwrap_err().to_string();
        assert!(err.contains("\"ten\""), "{err}");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let c = parse(&["--consul-token", "s3cr3t-token"]);
        assert!(!format!("{c:?}").contains("s3cr3t-token"));
        assert_eq!(c.token().unwrap(), Some(Secret("s3cr3t-token".into())));
    }

    #[test]
    fn the_token_file_is_read_and_trimmed_and_a_missing_one_is_named() {
        let dir = std::env::temp_dir().join(format!("vrp-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "abc-123\n").unwrap();
        let c = parse(&["--consul-token-file", path.to_str().unwrap()]);
        assert_eq!(c.token().unwrap(), Some(Secret("abc-123".into())));
        let missing = dir.join("nope");
        let c = parse(&["--consul-token-file", missing.to_str().unwrap()]);
        assert!(c.token().unwrap_err().to_string().contains("nope"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_subcommand_runs_the_daemon_and_status_takes_its_own_flags() {
        assert!(parse(&["--max-stale", "5s"]).command.is_none());
        let c = parse(&["--max-stale", "5s", "status", "--addr", "10.1.2.3:8210", "--json"]);
        match c.command {
            Some(Command::Status(a)) => {
                assert_eq!(a.addr, "10.1.2.3:8210");
                assert!(a.json);
                assert_eq!(a.timeout, Duration::from_secs(5));
            }
            None => panic!("status was not parsed"),
        }
        assert_eq!(c.max_stale, Duration::from_secs(5));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(&[]);
        assert_eq!(c.listen, "127.0.0.1:8210".parse().unwrap());
        assert_eq!(c.service, "vault");
        assert_eq!(c.active_tag, "active");
        assert_eq!(c.max_stale, Duration::from_secs(60));
        assert_eq!(c.consul_wait, Duration::from_secs(60));
        assert!(c.validate().is_ok());
    }
}
