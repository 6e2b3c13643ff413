//! The Consul HTTP client: one `GET /v1/health/service/<name>` per call, with the token, TLS,
//! datacenter and consistency options, a bounded body and a timeout on every request.
//!
//! It owns the wire (URL, headers, body limits, error classification). It never decides what
//! to do with an answer or an error: that is the watch loop's job (`watch`).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Certificate, Identity, StatusCode, Url};

use super::choose::ServiceEntry;
use crate::config::{Config, ConfigError};

/// The largest health answer we read. A Vault cluster is a handful of entries of ~2 KiB each;
/// anything near this is not a Vault service and must not exhaust our memory.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How much of an error body goes into a message.
const MAX_ERROR_TEXT: usize = 200;

/// One good Consul answer.
#[derive(Clone, Debug)]
pub struct HealthAnswer {
    /// `X-Consul-Index`.
    pub index: u64,
    /// The entries, as parsed.
    pub entries: Vec<ServiceEntry>,
    /// `X-Consul-KnownLeader`.
    pub known_leader: bool,
}

/// Why a Consul request gave no usable answer.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConsulError {
    /// Could not connect, or the connection broke.
    #[error("cannot reach Consul at {url}: {why}")]
    Transport {
        /// The request URL, without the token (which is only ever a header).
        url: String,
        /// The transport error.
        why: String,
    },
    /// No answer within the request's timeout.
    #[error("Consul at {url} did not answer within {secs:.1}s")]
    Timeout {
        /// The request URL.
        url: String,
        /// The timeout.
        secs: f64,
    },
    /// 403: the token is unknown or lacks permission.
    #[error("Consul refused the ACL token (403): {0}")]
    Forbidden(String),
    /// Any other non-200 status.
    #[error("Consul answered {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The entries were filtered out by ACLs: the token lacks `service:read`/`node:read`.
    /// Reported as an error so a permission problem never reads as "no Vault node".
    #[error(
        "Consul filtered the answer by ACLs: the token lacks service:read or node:read on {0:?}"
    )]
    FilteredByAcls(String),
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("Consul answer is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body is not the JSON array of health entries.
    #[error("Consul answer is not a health entry list: {0}")]
    Malformed(String),
    /// No usable `X-Consul-Index` header.
    #[error("Consul answer has no valid X-Consul-Index header (got {0:?})")]
    BadIndex(String),
}

impl ConsulError {
    /// The `outcome` label of the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            ConsulError::Transport { .. } => "unreachable",
            ConsulError::Timeout { .. } => "timeout",
            ConsulError::Forbidden(_) | ConsulError::FilteredByAcls(_) => "acl",
            ConsulError::Status { .. } => "http_error",
            ConsulError::TooLarge | ConsulError::Malformed(_) | ConsulError::BadIndex(_) => {
                "malformed"
            }
        }
    }
}

/// A Consul client for one service's health.
#[derive(Clone, Debug)]
pub struct ConsulClient {
    http: reqwest::Client,
    base: Url,
    service: String,
    dc: Option<String>,
    stale: bool,
    timeout: Duration,
}

impl ConsulClient {
    /// Builds the client from the validated configuration, reading the token and TLS files.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let base = config.consul_url()?;
        let mut headers = HeaderMap::new();
        if let Some(token) = config.token()? {
            let mut value =
                HeaderValue::from_str(&token.0).map_err(|_| ConfigError::ConsulAddr {
                    value: "<token>".into(),
                    why: "the Consul token holds characters that cannot go in an HTTP header"
                        .into(),
                })?;
            // Keeps the token out of any debug output of the HTTP stack.
            value.set_sensitive(true);
            headers.insert("x-consul-token", value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.consul_timeout)
            // Blocking queries hold the connection: keep one alive, never pile them up.
            .pool_max_idle_per_host(2)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vault-redirect-poller/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!config.consul_ssl_verify);
        if let Some(path) = &config.consul_cacert {
            let pem = read(path, "Consul CA certificate")?;
            let certs = Certificate::from_pem_bundle(&pem).map_err(|e| ConfigError::Pem {
                what: "Consul CA certificate",
                path: path.clone(),
                why: e.to_string(),
            })?;
            if certs.is_empty() {
                return Err(ConfigError::Pem {
                    what: "Consul CA certificate",
                    path: path.clone(),
                    why: "no certificate in the file".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&config.consul_client_cert, &config.consul_client_key) {
            let mut pem = read(cert, "Consul client certificate")?;
            pem.push(b'\n');
            pem.extend(read(key, "Consul client key")?);
            let identity = Identity::from_pem(&pem).map_err(|e| ConfigError::Pem {
                what: "Consul client certificate and key",
                path: cert.clone(),
                why: e.to_string(),
            })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| ConfigError::ConsulAddr {
            value: config.consul_addr.clone(),
            why: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(ConsulClient {
            http,
            base,
            service: config.service.clone(),
            dc: config.consul_dc.clone(),
            stale: config.consul_stale,
            timeout: config.consul_timeout,
        })
    }

    /// `host:port` of Consul, as vault-redirector's health shows it.
    pub fn host_port(&self) -> String {
        match (self.base.host_str(), self.base.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            _ => self.base.to_string(),
        }
    }

    /// The request URL for a query at `index` waiting up to `wait` (non-blocking when 0).
    pub fn url(&self, index: u64, wait: Duration) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/v1/health/service/{}", self.service));
        {
            let mut q = url.query_pairs_mut();
            if let Some(dc) = &self.dc {
                q.append_pair("dc", dc);
            }
            if self.stale {
                q.append_key_only("stale");
            }
            if index > 0 {
                q.append_pair("index", &index.to_string());
                q.append_pair("wait", &crate::duration::to_consul(wait));
            }
        }
        url
    }

    /// How long a request at `index` with `wait` may take: Consul may hold a blocking query
    /// for `wait + wait/16`, so the timeout must exceed that.
    pub fn timeout_for(&self, index: u64, wait: Duration) -> Duration {
        if index > 0 {
            wait + wait / 16 + self.timeout
        } else {
            self.timeout
        }
    }

    /// One health query. `index` 0 asks for the current state at once.
    pub async fn fetch(&self, index: u64, wait: Duration) -> Result<HealthAnswer, ConsulError> {
        let url = self.url(index, wait);
        let timeout = self.timeout_for(index, wait);
        let shown = url.to_string();
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                ConsulError::Timeout { url: shown.clone(), secs: timeout.as_secs_f64() }
            } else {
                ConsulError::Transport { url: shown.clone(), why: error_chain(&e) }
            }
        };
        let mut response =
            self.http.get(url.clone()).timeout(timeout).send().await.map_err(classify)?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ConsulError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        if status == StatusCode::FORBIDDEN {
            return Err(ConsulError::Forbidden(excerpt(&body)));
        }
        if status != StatusCode::OK {
            return Err(ConsulError::Status { status: status.as_u16(), body: excerpt(&body) });
        }
        let raw_index = headers
            .get("x-consul-index")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let index = raw_index
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| ConsulError::BadIndex(raw_index.clone().unwrap_or_default()))?;
        let entries: Vec<ServiceEntry> =
            serde_json::from_slice(&body).map_err(|e| ConsulError::Malformed(e.to_string()))?;
        let filtered = headers
            .get("x-consul-results-filtered-by-acls")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if filtered && entries.is_empty() {
            return Err(ConsulError::FilteredByAcls(self.service.clone()));
        }
        let known_leader =
            headers.get("x-consul-knownleader").is_none_or(|v| v.as_bytes() != b"false");
        Ok(HealthAnswer { index, entries, known_leader })
    }
}

fn read(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// The error and its causes on one line: reqwest's top-level message alone hides the reason.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn client(args: &[&str]) -> ConsulClient {
        let mut all = vec!["p"];
        all.extend_from_slice(args);
        ConsulClient::new(&Config::try_parse_from(all).unwrap()).unwrap()
    }

    #[test]
    fn the_url_carries_dc_stale_index_and_wait_and_never_the_token() {
        let c = client(&[
            "--consul-addr",
            "127.0.0.1:8500",
            "--consul-dc",
            "dc2",
            "--consul-stale",
            "--service",
            "vault-x",
            "--consul-token",
            "tok",
        ]);
        let url = c.url(42, Duration::from_secs(60)).to_string();
        assert_eq!(
            url,
            "http://127.0.0.1:8500/v1/health/service/vault-x?dc=dc2&stale&index=42&wait=60000ms"
        );
        assert!(!url.contains("tok"));
        assert_eq!(c.url(0, Duration::from_secs(60)).query(), Some("dc=dc2&stale"));
    }

    #[test]
    fn a_blocking_request_may_take_longer_than_wait_plus_consuls_jitter() {
        let c = client(&["--consul-timeout", "10s"]);
        assert_eq!(c.timeout_for(5, Duration::from_secs(160)), Duration::from_secs(160 + 10 + 10));
        assert_eq!(c.timeout_for(0, Duration::from_secs(160)), Duration::from_secs(10));
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let cfg = Config::try_parse_from(["p", "--consul-cacert", "/nonexistent/ca.pem"]).unwrap();
        let err = ConsulClient::new(&cfg).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("vrp-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a pem").unwrap();
        let cfg = Config::try_parse_from(["p", "--consul-cacert", path.to_str().unwrap()]).unwrap();
        let err = ConsulClient::new(&cfg).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("vrp-ca-"), "{err}");
    }
}
