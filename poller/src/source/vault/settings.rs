//! The vault source's flags, each with its environment twin: the nodes, the probe pace, and
//! TLS under Vault's own variable names (the ones the `vault` CLI reads), and their checks.
//!
//! It owns parsing and validation only; it never opens a connection.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};

use super::client::VaultTls;
use super::decide::Endpoint;
use crate::duration;

/// The shortest probe interval: below it the probes, not Vault, would be the load.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

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

/// Why the vault source's settings cannot be used; each message names the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum VaultConfigError {
    /// `--source vault` without any `--vault-node`.
    #[error("--source vault needs at least one --vault-node (or VAULT_REDIRECT_VAULT_NODES)")]
    NoNodes,
    /// A `--vault-node` is not `scheme://host:port`.
    #[error("invalid --vault-node {0}")]
    Node(String),
    /// The same node was given twice.
    #[error("--vault-node {0} is given twice")]
    DuplicateNode(String),
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
    /// A file is not the PEM it should be.
    #[error("cannot use {what} {path:?}: {why}")]
    Pem {
        /// What the file was for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Only one of the client certificate and key was given.
    #[error("VAULT_CLIENT_CERT and VAULT_CLIENT_KEY go together; only {0} was given")]
    ClientPair(&'static str),
    /// `VAULT_TLS_SERVER_NAME` is not a DNS name or IP address.
    #[error("invalid VAULT_TLS_SERVER_NAME {0:?}: not a DNS name or IP address")]
    ServerName(String),
    /// The TLS library or the HTTP client refused the configuration.
    #[error("cannot build the Vault TLS client: {0}")]
    Build(String),
}

impl VaultArgs {
    /// The nodes to probe, each checked, in the order given.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, VaultConfigError> {
        let given: Vec<&str> =
            self.vault_nodes.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).collect();
        if given.is_empty() {
            return Err(VaultConfigError::NoNodes);
        }
        let mut out: Vec<Endpoint> = Vec::with_capacity(given.len());
        for text in given {
            let e = Endpoint::parse(text).map_err(VaultConfigError::Node)?;
            if out.iter().any(|o| o.authority() == e.authority()) {
                return Err(VaultConfigError::DuplicateNode(e.authority()));
            }
            out.push(e);
        }
        Ok(out)
    }

    /// TLS towards Vault.
    pub fn tls(&self) -> VaultTls {
        VaultTls {
            cacert: self.vault_cacert.clone(),
            client_cert: self.vault_client_cert.clone(),
            client_key: self.vault_client_key.clone(),
            server_name: self.vault_tls_server_name.clone().filter(|n| !n.is_empty()),
            skip_verify: self.vault_skip_verify,
        }
    }

    /// Checks everything that can be checked without the network (files are read when the
    /// client is built).
    pub fn validate(&self) -> Result<(), VaultConfigError> {
        self.endpoints()?;
        let dur = |flag, d: Duration, ok: bool, why| {
            if ok {
                Ok(())
            } else {
                Err(VaultConfigError::Duration { flag, value: duration::display(d), why })
            }
        };
        let i = self.vault_probe_interval;
        dur(
            "--vault-probe-interval",
            i,
            i >= MIN_PROBE_INTERVAL && i <= Duration::from_secs(60),
            "must be between 50ms and 60s",
        )?;
        let t = self.vault_probe_timeout;
        dur(
            "--vault-probe-timeout",
            t,
            t >= Duration::from_millis(10) && t <= Duration::from_secs(60),
            "must be between 10ms and 60s",
        )?;
        match (&self.vault_client_cert, &self.vault_client_key) {
            (Some(_), None) => Err(VaultConfigError::ClientPair("VAULT_CLIENT_CERT")),
            (None, Some(_)) => Err(VaultConfigError::ClientPair("VAULT_CLIENT_KEY")),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        vault: VaultArgs,
    }

    fn parse(args: &[&str]) -> VaultArgs {
        let mut all = vec!["p"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).unwrap().vault
    }

    #[test]
    fn nodes_repeat_and_the_defaults_are_the_documented_ones() {
        let v = parse(&[
            "--vault-node",
            "https://10.0.0.1:8200",
            "--vault-node",
            "https://10.0.0.2:8200",
        ]);
        let nodes: Vec<String> = v.endpoints().unwrap().iter().map(Endpoint::url).collect();
        assert_eq!(nodes, ["https://10.0.0.1:8200", "https://10.0.0.2:8200"]);
        assert_eq!(v.vault_probe_interval, Duration::from_millis(500));
        assert_eq!(v.vault_probe_timeout, Duration::from_millis(500));
        assert!(!v.vault_skip_verify);
        assert!(v.validate().is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "at least one --vault-node"),
            (&["--vault-node", "10.0.0.1:8200"], "10.0.0.1:8200"),
            (&["--vault-node", "http://a:1/v1"], "http://a:1/v1"),
            (&["--vault-node", "http://a:1", "--vault-node", "https://a:1"], "a:1 is given twice"),
            (
                &["--vault-node", "http://a:1", "--vault-probe-interval", "10ms"],
                "--vault-probe-interval 10ms",
            ),
            (
                &["--vault-node", "http://a:1", "--vault-probe-timeout", "0"],
                "--vault-probe-timeout",
            ),
            (
                &["--vault-node", "http://a:1", "--vault-client-key", "/k.pem"],
                "only VAULT_CLIENT_KEY",
            ),
        ];
        for (args, needle) in cases {
            let err = parse(args).validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
