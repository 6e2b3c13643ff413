//! Sources of truth: where the poller learns which Vault node is active. Each source is a
//! module beside its siblings (`consul/`, `vault/`, `kubernetes/`); this module owns what they share: which
//! source runs ([`SourceKind`]), what the rest of the poller knows about it ([`SourceInfo`]),
//! and the one way a source changes the state ([`Publisher`]).
//!
//! A source never answers HTTP, never computes versions or staleness itself and never touches
//! the snapshot but through its [`Publisher`]: versions, the history of changes, the
//! `--max-stale` bound and the metrics every source shares are defined once, there.
//!
//! Adding a source: a module `source/<name>/` with a type implementing [`Source`] (its loop
//! turns what it observes into [`Reading`]s and errors), a [`SourceKind`] variant, and its arm
//! in [`build`]. Nothing outside `source/` changes.

pub mod backoff;
pub mod consul;
pub mod kubernetes;
mod publisher;
pub mod vault;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

pub use crate::source_kind::SourceKind;
pub use publisher::{Publisher, Reading};

use crate::config::{Config, ConfigError};

/// What the status page, `status`, `/health` and `/metrics` say about the running source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// Which source.
    pub kind: SourceKind,
    /// Where it reads from, as `host:port` or a short list (Consul's `host:port` today).
    pub endpoint: String,
    /// What it watches there, in words (`service "vault", tag "active"`).
    pub watching: String,
}

/// A running source's loop, boxed so [`Source`] stays object-safe.
pub type SourceLoop = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of truth: built from the configuration, described once, then run.
pub trait Source: Send + 'static {
    /// What the rest of the poller shows about this source.
    fn info(&self) -> SourceInfo;

    /// The loop: observes the cluster and publishes through `out` until `stop` turns true (or
    /// its sender is dropped). It is the only writer of the state's content.
    fn run(self: Box<Self>, out: Publisher, stop: watch::Receiver<bool>) -> SourceLoop;
}

/// The source `config` asks for, with its clients built (files read, addresses checked).
pub fn build(config: &Config) -> Result<Box<dyn Source>, ConfigError> {
    match config.source {
        SourceKind::Consul => Ok(Box::new(consul::ConsulSource::new(config)?)),
        SourceKind::Vault => Ok(Box::new(vault::VaultSource::new(config)?)),
        SourceKind::Kubernetes => Ok(Box::new(kubernetes::KubernetesSource::new(config)?)),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn consul_is_the_default_and_the_other_sources_build_or_name_what_is_missing() {
        let parse = |args: &[&str]| Config::try_parse_from([&["p"], args].concat());
        let config = parse(&[]).map_err(|e| e.to_string());
        assert_eq!(config.map(|c| c.source), Ok(SourceKind::Consul));
        // Outside a pod and without a kubeconfig the Kubernetes source refuses to start,
        // naming what it looked for.
        let config =
            parse(&["--source", "kubernetes", "--k8s-kubeconfig", "/nonexistent/kubeconfig"])
                .map_err(|e| e.to_string());
        let err = config.and_then(|c| build(&c).map(|_| ()).map_err(|e| e.to_string()));
        assert!(
            err.as_ref().is_err_and(
                |e| e.contains("no KUBERNETES_SERVICE_HOST") && e.contains("kubeconfig")
            ),
            "{err:?}"
        );
        let vault = parse(&["--source", "vault", "--vault-node", "http://127.0.0.2:8200"]);
        let info = vault
            .map_err(|e| e.to_string())
            .and_then(|c| build(&c).map(|s| s.info()).map_err(|e| e.to_string()));
        assert_eq!(
            info.map(|i| (i.kind, i.endpoint)),
            Ok((SourceKind::Vault, "http://127.0.0.2:8200".into()))
        );
        assert!(parse(&["--source", "etcd"]).is_err());
    }
}
