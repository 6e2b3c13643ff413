//! The accept loop every double runs: connections live in a `JoinSet` owned by the loop's
//! task, so aborting that task closes all of them, which `axum::serve` would not do.

use std::net::SocketAddr;
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

/// Accepts connections until aborted; `app` builds each connection's router from its peer.
/// `name` prefixes the log lines.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    protocols: Protocols,
    name: &'static str,
    app: impl Fn(SocketAddr) -> Router,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = TowerToHyperService::new(app(peer));
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let mut http = auto::Builder::new(TokioExecutor::new());
                        if let Protocols::Http1 = protocols {
                            http = http.http1_only();
                        }
                        match tls {
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(tls_stream) => {
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
