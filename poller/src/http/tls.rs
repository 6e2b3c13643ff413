//! TLS for the standalone redirect listener (`--redirect-tls-cert`, `--redirect-tls-key`:
//! vault-redirector's `-c`/`-k`): loading and checking the PEM files at start-up, and the
//! accept loop that serves the redirect router over rustls, HTTP/1.1 or h2 as ALPN chose.
//!
//! It never decides anything about a request: every request goes to `redirect::router`
//! unchanged. It never serves the state API, which stays plain HTTP on `--listen`.
//!
//! Why an accept loop of our own rather than `axum::serve`: the handshake must not run in the
//! accept path (one silent client would stall every other), h2 needs hyper's h2 server, which
//! the state API must not get, and each connection has to watch shutdown, handshake included,
//! or an idle client would hold the poller's stop for the whole grace period.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::InconsistentKeys;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::ConfigError;

/// How long a client has to finish its handshake: a silent one must not hold a task forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Offered in this order: a client that speaks h2 gets it, as from Vault's own listener.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

const CERT: &str = "redirect TLS certificate";
const KEY: &str = "redirect TLS key";

/// Reads and checks the PEM certificate chain (leaf first) and private key, and builds the
/// acceptor: rustls with the ring provider (the one reqwest's rustls already uses, named
/// explicitly so a second provider elsewhere in the build cannot make rustls refuse).
/// Every error names the file at fault.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ConfigError> {
    let read = |path: &Path, what| {
        std::fs::read(path).map_err(|source| ConfigError::File {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let bad =
        |path: &Path, what, why: String| ConfigError::Pem { what, path: path.to_path_buf(), why };

    let chain_pem = read(cert, CERT)?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, CERT, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, CERT, "no PEM CERTIFICATE block in it".into()));
    }
    let key_pem = read(key, KEY)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            bad(key, KEY, "no PEM PRIVATE KEY block in it".into())
        }
        other => bad(key, KEY, other.to_string()),
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Loaded once on its own so a key the provider cannot use is blamed on the key file;
    // what `with_single_cert` refuses after that is the chain or the pairing.
    provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| bad(key, KEY, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, CERT, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
                bad(key, KEY, format!("does not match the leaf (first) certificate in {cert:?}"))
            }
            other => bad(cert, CERT, other.to_string()),
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS on `listener` until `stop` turns true, then stops accepting and
/// waits for open connections to finish (idle ones close at once, h2 ones get a GOAWAY).
/// Dropping the future (the poller aborting it after its grace) closes every connection.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stopping) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(connection(tcp, peer, acceptor.clone(), app.clone(), stop.clone()));
                }
                Err(e) => accept_error(e).await,
            },
            // Reap finished connections so the set does not grow with every client ever seen.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Resolves once the poller stops (or its stop sender is gone). Holds no `watch::Ref`
/// across an await, so the tasks stay `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// As axum's and hyper's servers do: a client giving up during accept is nothing; anything
/// else (EMFILE...) is logged and accepting pauses a second instead of spinning.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    log::error!("redirects: accept failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                log::debug!("redirects: TLS handshake with {peer} failed: {e}");
                return;
            }
            Err(_) => {
                log::debug!("redirects: TLS handshake with {peer} not done within {}s", HANDSHAKE_TIMEOUT.as_secs());
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    // h2 over TLS only by ALPN (RFC 9113 3.2); a client that negotiated nothing speaks HTTP/1.1.
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let builder = auto::Builder::new(TokioExecutor::new());
    let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    log::debug!("redirects: connection from {peer} ended: {e}");
                }
                return;
            }
            _ = stopped(&mut stop), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_certificate_is_named() {
        let err = acceptor(Path::new("/nonexistent/cert.pem"), Path::new("/nonexistent/key.pem"))
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("redirect TLS certificate") && err.contains("/nonexistent/cert.pem"),
            "{err}"
        );
    }
}
