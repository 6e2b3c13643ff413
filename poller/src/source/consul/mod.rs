//! The Consul source: Vault's own service registration in Consul (tags `active`/`standby`,
//! the `Vault Sealed Status` check), read through blocking queries on the service's health.
//!
//! `client` owns the wire (one health query), `choose` the pure choice of the active node
//! from an answer, `watch` the blocking-query loop that turns answers into readings for the
//! publisher. Nothing here answers HTTP or computes versions and staleness.

pub mod choose;
pub mod client;
pub mod watch;

use crate::config::{Config, ConfigError};
use crate::source::{Publisher, Source, SourceInfo, SourceKind, SourceLoop};

use self::client::ConsulClient;
use self::watch::{WatchSettings, Watcher};

/// Consul as the source of truth.
pub struct ConsulSource {
    client: ConsulClient,
    settings: WatchSettings,
}

impl ConsulSource {
    /// Builds the Consul client from the configuration (reading the token and TLS files).
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        Ok(ConsulSource {
            client: ConsulClient::new(config)?,
            settings: WatchSettings {
                service: config.service.clone(),
                active_tag: config.active_tag.clone(),
                wait: config.consul_wait,
                backoff_max: config.backoff_max,
            },
        })
    }
}

impl Source for ConsulSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: SourceKind::Consul,
            endpoint: self.client.host_port(),
            watching: format!(
                "service {:?}, tag {:?}",
                self.settings.service, self.settings.active_tag
            ),
        }
    }

    fn run(
        self: Box<Self>,
        out: Publisher,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> SourceLoop {
        let ConsulSource { client, settings } = *self;
        Box::pin(Watcher::new(client, settings, out).run(stop))
    }
}
