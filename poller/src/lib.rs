//! vault-redirect-poller: learns which Vault node is active from a source of truth (Consul's
//! health view of Vault today) and serves it to every filter (and, in standalone mode, to
//! clients as 307 redirects).
//!
//! The library owns the whole daemon so tests run it in-process on 127.0.0.1:0:
//! [`Poller::bind`] validates the configuration and binds the listeners, [`Poller::run`] runs
//! until the shutdown future resolves. It never installs signal handlers or a logger: that is
//! the binary's edge.
//!
//! Modules, leaves last (no module imports one that imports it back):
//! - `config` (flags), `duration`, `signals` (log toggles and termination), `metrics` (every
//!   metric name), `state` (the shared snapshot), `context` (what handlers share: `AppState`,
//!   `Info`);
//! - `source_kind` (`--source`'s values); `source`: the sources of truth and their seam
//!   (`Source`, `Publisher`, `Reading`), one module per source: `source::consul` (the HTTP
//!   `client`, the pure `choose`, the blocking-query `watch` loop), the only state writer;
//! - `doc`: the documents as pure code (`health`, `status`, `readiness`, `catch_up`, which
//!   keeps versions comparable across replicas); `longpoll` (the wait on `/v1/active`);
//! - `http`: the handlers (`api`), the lean long-poll front (`front`), `/livez` and `/readyz`
//!   (`probes`), standalone redirects (`redirect`) and their TLS listener (`tls`);
//! - `cli`: the `status` subcommand (`client`, `table`).

pub mod cli;
pub mod config;
pub mod context;
pub mod doc;
pub mod duration;
pub mod http;
pub mod kubernetes_flags;
pub mod longpoll;
pub mod metrics;
pub mod signals;
pub mod source;
pub mod source_kind;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use vault_redirect_core::{HostChoice, RedirectPolicy, Scheme};

pub use config::Config;

use crate::config::{ConfigError, HostArg, SchemeArg};
use crate::context::{AppState, Info};
use crate::metrics::{Metrics, SourceLabel};
use crate::source::{Publisher, Source};
use crate::state::Snapshot;

/// How long shutdown waits for open requests once long-polls have been answered.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the poller cannot start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A server failed while running.
    #[error("{what} server failed: {source}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// A poller whose configuration is valid and whose listeners are bound.
pub struct Poller {
    config: Config,
    source: Box<dyn Source>,
    api_listener: TcpListener,
    redirect_listener: Option<TcpListener>,
    redirect_tls: Option<tokio_rustls::TlsAcceptor>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr).await.map_err(|source| RunError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, RunError> {
    l.local_addr().map_err(|source| RunError::Bind { addr, source })
}

/// The redirect policy the configuration asks for.
pub fn policy(config: &Config) -> RedirectPolicy {
    RedirectPolicy {
        scheme: match config.redirect_scheme {
            SchemeArg::Http => Scheme::Http,
            SchemeArg::Https => Scheme::Https,
        },
        host: match config.redirect_host {
            HostArg::Address => HostChoice::Address,
            HostArg::Node => HostChoice::Node,
        },
        port: config.redirect_port,
    }
}

impl Poller {
    /// Validates `config`, builds the source (reading token and TLS files) and binds the
    /// listeners, logging `listening on <addr>` for each.
    pub async fn bind(config: Config) -> Result<Poller, RunError> {
        config.validate()?;
        let source = source::build(&config)?;
        // Loaded and checked before anything is bound, so a bad file fails start-up cleanly.
        let redirect_tls = match (&config.redirect_tls_cert, &config.redirect_tls_key) {
            (Some(cert), Some(key)) => Some(http::tls::acceptor(cert, key)?),
            _ => None,
        };
        let api_listener = bind(config.listen).await?;
        log::info!("listening on {}", local_addr(&api_listener, config.listen)?);
        let redirect_listener = match config.redirect_listen {
            Some(addr) => {
                let l = bind(addr).await?;
                log::info!("redirects listening on {}", local_addr(&l, addr)?);
                if let Some(cert) =
                    config.redirect_tls_cert.as_ref().filter(|_| redirect_tls.is_some())
                {
                    log::info!("redirects served over TLS (h2, http/1.1) with {}", cert.display());
                }
                Some(l)
            }
            None => None,
        };
        Ok(Poller { config, source, api_listener, redirect_listener, redirect_tls })
    }

    /// The state API's bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, RunError> {
        local_addr(&self.api_listener, self.config.listen)
    }

    /// The standalone redirect listener's bound address, if enabled.
    pub fn redirect_addr(&self) -> Result<Option<SocketAddr>, RunError> {
        match (&self.redirect_listener, self.config.redirect_listen) {
            (Some(l), Some(addr)) => local_addr(l, addr).map(Some),
            _ => Ok(None),
        }
    }

    /// Runs until `shutdown` resolves, then answers every long-poll with the current state,
    /// lets open requests finish (up to [`SHUTDOWN_GRACE`]) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let Poller { config, source, api_listener, redirect_listener, redirect_tls } = self;
        let metrics = Arc::new(Metrics::new());
        metrics.max_stale.set(config.max_stale.as_secs_f64());
        let described = source.info();
        metrics.source.get_or_create(&SourceLabel { source: described.kind.name() }).set(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (state_tx, state_rx) =
            watch::channel(Snapshot::initial(Instant::now(), described.kind));
        let info = Arc::new(Info {
            source: described,
            policy: policy(&config),
            max_stale: config.max_stale,
            max_waiters: config.max_waiters,
        });
        let versions = state_tx.clone();
        let publisher = Publisher::new(state_tx, metrics.clone(), config.max_stale);
        let watcher_task = tokio::spawn(source.run(publisher, stop_rx.clone()));
        let app = AppState {
            state: state_rx,
            metrics,
            stop: stop_rx.clone(),
            info: info.clone(),
            versions,
        };

        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // Long-polls are answered by the front; every other request by axum (see `front`).
        let (api_listener, front_open) =
            http::front::FrontListener::start(api_listener, app.clone())
                .map_err(|source| RunError::Serve { what: "state API", source })?;
        let api_server = axum::serve(api_listener, http::api::router(app.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()));
        let mut api_task = tokio::spawn(async move { api_server.await });
        let mut redirect_task = redirect_listener.map(|l| {
            let router = http::redirect::router(app.clone(), info.policy.clone());
            match redirect_tls {
                Some(acceptor) => {
                    tokio::spawn(http::tls::serve(l, acceptor, router, stop_rx.clone()))
                }
                None => {
                    let server =
                        axum::serve(l, router).with_graceful_shutdown(stopped(stop_rx.clone()));
                    tokio::spawn(async move { server.await })
                }
            }
        });

        let failed = tokio::select! {
            _ = shutdown => None,
            r = &mut api_task => Some(("state API", r)),
            Some(r) = async { match redirect_task.as_mut() { Some(t) => Some(t.await), None => None } } => Some(("redirect", r)),
        };
        let _ = stop_tx.send(true);
        if let Some((what, result)) = failed {
            watcher_task.abort();
            let source = match result {
                Ok(Ok(())) => std::io::Error::other("stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(join) => std::io::Error::other(join.to_string()),
            };
            return Err(RunError::Serve { what, source });
        }
        let drain = async {
            let _ = watcher_task.await;
            let _ = (&mut api_task).await;
            front_open.drained().await;
            if let Some(t) = redirect_task.as_mut() {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            log::warn!(
                "shutdown: requests still open after {}s; closing them",
                SHUTDOWN_GRACE.as_secs()
            );
            api_task.abort();
            if let Some(t) = redirect_task {
                t.abort();
            }
        }
        log::info!("stopped");
        Ok(())
    }
}

/// Binds and runs until `shutdown` resolves: the whole daemon.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    Poller::bind(config).await?.run(shutdown).await
}
