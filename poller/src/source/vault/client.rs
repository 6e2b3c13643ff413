//! The HTTP side of the `vault` source: one `GET /v1/sys/health` or `GET /v1/sys/leader` to
//! one node per call, each bounded by the probe timeout (connect included) and a body limit,
//! over TLS configured from Vault's own environment names (`VAULT_CACERT`,
//! `VAULT_CLIENT_CERT`, `VAULT_CLIENT_KEY`, `VAULT_TLS_SERVER_NAME`, `VAULT_SKIP_VERIFY`),
//! so a host set up for the `vault` CLI needs nothing more.
//!
//! It owns the wire and turns every failure into words; it never decides what an answer
//! means for the active node (that is `decide`), and it never sends a token: both endpoints
//! are unauthenticated.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::time::Instant;

use super::decide::Endpoint;
use super::health::{classify, read_leader, Health, Leader, MAX_BODY_BYTES};
use crate::config::ConfigError;

/// TLS towards Vault, as Vault's CLI reads it from its environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultTls {
    /// PEM CA bundle that signs Vault's certificates (`VAULT_CACERT`); without it, the
    /// Mozilla roots (webpki-roots, as for Consul).
    pub cacert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (`VAULT_CLIENT_CERT`).
    pub client_cert: Option<PathBuf>,
    /// Its PEM private key (`VAULT_CLIENT_KEY`).
    pub client_key: Option<PathBuf>,
    /// The name Vault's certificate is checked against instead of each node's host
    /// (`VAULT_TLS_SERVER_NAME`): nodes probed by IP behind one certificate name.
    pub server_name: Option<String>,
    /// Accept any certificate (`VAULT_SKIP_VERIFY`; tests only).
    pub skip_verify: bool,
}

/// One node's probe: what it answered and how long it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The classified answer.
    pub health: Health,
    /// The HTTP status, when one came back.
    pub code: Option<u16>,
    /// From sending the request to the end of the body (or the failure).
    pub latency: Duration,
}

/// Probes Vault nodes; cheap to clone (one connection pool for every node).
#[derive(Clone, Debug)]
pub struct ProbeClient {
    http: reqwest::Client,
    timeout: Duration,
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path, why: impl ToString) -> ConfigError {
    ConfigError::Pem { what, path: path.to_path_buf(), why: why.to_string() }
}

/// How the server's certificate is judged.
#[derive(Debug)]
enum Check {
    /// Against the roots, for the URL's host or the fixed `VAULT_TLS_SERVER_NAME`.
    Roots(Arc<WebPkiServerVerifier>, Option<ServerName<'static>>),
    /// `VAULT_SKIP_VERIFY`: any certificate is taken.
    Any,
}

/// The certificate check, and the handshake signatures, which are checked in every case, so
/// even under `VAULT_SKIP_VERIFY` the peer must hold the key of the certificate it sent.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        url_host: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            Check::Roots(webpki, name) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                name.as_ref().unwrap_or(url_host),
                ocsp,
                now,
            ),
            Check::Any => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds rustls' client configuration from `tls`, reading and checking every file.
pub fn tls_config(tls: &VaultTls) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &tls.cacert {
        Some(path) => {
            const WHAT: &str = "Vault CA certificate (VAULT_CACERT)";
            let pem = read(path, WHAT)?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error(WHAT, path, e))?;
            if certs.is_empty() {
                return Err(pem_error(WHAT, path, "no PEM CERTIFICATE block in it"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| pem_error(WHAT, path, e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let roots = Arc::new(roots);
    let check = if tls.skip_verify {
        Check::Any
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| ConfigError::VaultClient(e.to_string()))?;
        let name = match &tls.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| ConfigError::VaultServerName(name.clone()))?,
            ),
            None => None,
        };
        Check::Roots(webpki, name)
    };
    let verifier = Arc::new(Verifier { check, provider: provider.clone() });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::VaultClient(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            const CERT: &str = "Vault client certificate (VAULT_CLIENT_CERT)";
            const KEY: &str = "Vault client key (VAULT_CLIENT_KEY)";
            let chain = CertificateDer::pem_slice_iter(&read(cert, CERT)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error(CERT, cert, e))?;
            if chain.is_empty() {
                return Err(pem_error(CERT, cert, "no PEM CERTIFICATE block in it"));
            }
            let key_der = PrivateKeyDer::from_pem_slice(&read(key, KEY)?)
                .map_err(|e| pem_error(KEY, key, e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| pem_error(KEY, key, e))
        }
        (Some(_), None) => Err(ConfigError::VaultClientPair("VAULT_CLIENT_CERT")),
        (None, Some(_)) => Err(ConfigError::VaultClientPair("VAULT_CLIENT_KEY")),
        (None, None) => Ok(builder.with_no_client_auth()),
    }
}

/// Why a request gave no body, in words (reqwest's own text is the innermost cause).
fn transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}", crate::duration::display(timeout));
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    if e.is_connect() {
        format!("cannot connect: {text}")
    } else {
        text
    }
}

impl ProbeClient {
    /// A client whose every request (connect, TLS, answer, body) ends within `timeout`.
    pub fn new(tls: &VaultTls, timeout: Duration) -> Result<ProbeClient, ConfigError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(tls)?)
            .http1_only()
            .connect_timeout(timeout)
            .timeout(timeout)
            // One probe per node per interval: keep each node's connection warm, no more.
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vault-redirect-poller/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::VaultClient(e.to_string()))?;
        Ok(ProbeClient { http, timeout })
    }

    /// `GET path` on `node`: the status and at most [`MAX_BODY_BYTES`] of body.
    async fn get(&self, node: &Endpoint, path: &str) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", node.url());
        let mut response =
            self.http.get(&url).send().await.map_err(|e| transport_error(&e, self.timeout))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| transport_error(&e, self.timeout))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("{path} answered more than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// Probes `node`'s `sys/health`, asked with no override so Vault's default codes apply.
    pub async fn health(&self, node: &Endpoint) -> Probe {
        let started = Instant::now();
        let answer = self.get(node, "/v1/sys/health").await;
        let latency = started.elapsed();
        match answer {
            Ok((status, body)) => {
                Probe { health: classify(status, &body), code: Some(status), latency }
            }
            Err(why) => Probe { health: Health::Unreachable(why), code: None, latency },
        }
    }

    /// Reads `node`'s `sys/leader`.
    pub async fn leader(&self, node: &Endpoint) -> Result<Leader, String> {
        let (status, body) = self.get(node, "/v1/sys/leader").await?;
        read_leader(status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_and_a_lone_client_certificate_are_named() {
        let tls = VaultTls { cacert: Some("/nonexistent/ca.pem".into()), ..VaultTls::default() };
        let err = tls_config(&tls).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("VAULT_CACERT") && err.contains("/nonexistent/ca.pem"), "{err}");
        let tls = VaultTls { client_cert: Some("/c.pem".into()), ..VaultTls::default() };
        let err = tls_config(&tls).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("only VAULT_CLIENT_CERT"), "{err}");
        let tls = VaultTls { server_name: Some("bad name!".into()), ..VaultTls::default() };
        let err = tls_config(&tls).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("bad name!"), "{err}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let path = std::env::temp_dir().join(format!("vrp-vault-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let tls = VaultTls { cacert: Some(path.clone()), ..VaultTls::default() };
        let err = tls_config(&tls).err().map(|e| e.to_string()).unwrap_or_default();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("no PEM CERTIFICATE"), "{err}");
    }
}
