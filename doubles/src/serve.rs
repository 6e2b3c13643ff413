//! The accept loop every double runs: connections live in a `JoinSet` owned by the loop's
//! task, so aborting that task closes all of them, which `axum::serve` would not do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Which HTTP versions a double speaks.
#[derive(Clone, Copy)]
pub(crate) enum Protocols {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/1.1 and h2 (prior knowledge, or ALPN over TLS).
    Http1AndH2,
}

/// Accepts connections until aborted; `app` builds each connection's router from its peer
/// and, over TLS, the server name the client sent (SNI). `name` prefixes the log lines.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    protocols: Protocols,
    name: &'static str,
    app: impl Fn(SocketAddr, Option<String>) -> Router + Send + Sync + 'static,
) {
    let app = Arc::new(app);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (app, tls) = (app.clone(), tls.clone());
                    connections.spawn(async move {
                        let mut http = auto::Builder::new(TokioExecutor::new());
                        if let Protocols::Http1 = protocols {
                            http = http.http1_only();
                        }
                        match tls {
                            None => {
                                let service = TowerToHyperService::new(app(peer, None));
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(tls_stream) => {
                                    let sni = tls_stream.get_ref().1.server_name().map(str::to_string);
                                    let service = TowerToHyperService::new(app(peer, sni));
                                    let _ = http.serve_connection(TokioIo::new(tls_stream), service).await;
                                }
                                Err(e) => log::debug!("{name}: TLS handshake failed: {e}"),
                            },
                        }
                    });
                }
                Err(e) => {
                    log::warn!("{name}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A double's listener that a test can kill (every connection drops at once, as with a dead
/// process) and start again on the same address. Dropping it stops the server.
pub(crate) struct Server {
    addr: SocketAddr,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    tls: Option<TlsAcceptor>,
    protocols: Protocols,
    name: &'static str,
    app: Router,
}

impl Server {
    /// Serves `app` on `listener` until stopped.
    pub(crate) fn start(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        protocols: Protocols,
        name: &'static str,
        app: Router,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let server = Server { addr, task: std::sync::Mutex::new(None), tls, protocols, name, app };
        server.spawn(listener);
        Ok(server)
    }

    /// The address it listens on (the same after a restart).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it serves TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn spawn(&self, listener: TcpListener) {
        let app = self.app.clone();
        let task = tokio::spawn(accept_loop(
            listener,
            self.tls.clone(),
            self.protocols,
            self.name,
            move |_, _| app.clone(),
        ));
        if let Some(old) = self.slot().replace(task) {
            old.abort();
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        self.task.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops listening and drops every open connection; returns once the port is closed.
    pub(crate) async fn stop(&self) {
        let task = self.slot().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address, serving the same router.
    pub(crate) async fn restart(&self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.spawn(listener);
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.slot().take() {
            task.abort();
        }
    }
}
