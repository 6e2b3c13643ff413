//! The `status` subcommand's client: reads `/v1/status` from a running poller.
//!
//! It owns the address parsing and the request; it never renders (that is `cli::table`).

use std::time::Duration;

use crate::doc::status::StatusDoc;

/// Why `status` could not read a poller's status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// `--addr` is not `host:port` or an http(s) URL.
    #[error("invalid --addr {0:?}: expected host:port or http://host:port")]
    Addr(String),
    /// The request failed.
    #[error("cannot reach the poller at {url}: {source}")]
    Request {
        /// The URL asked.
        url: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The answer is not a status document.
    #[error("{url} answered {status} with something that is not a status document: {why}")]
    Body {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What is wrong with it.
        why: String,
    },
}

/// `http://host:port` from `--addr` (`host:port`, or a URL without a path).
pub fn base_url(addr: &str) -> Result<String, StatusError> {
    let a = addr.trim().trim_end_matches('/');
    let with_scheme = if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|_| StatusError::Addr(addr.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) || url.path() != "/" || url.query().is_some() {
        return Err(StatusError::Addr(addr.to_string()));
    }
    Ok(with_scheme)
}

/// Reads `/v1/status` from the poller at `addr`.
pub async fn fetch(addr: &str, timeout: Duration) -> Result<StatusDoc, StatusError> {
    let url = format!("{}/v1/status", base_url(addr)?);
    let request = |source| StatusError::Request { url: url.clone(), source };
    let client = reqwest::Client::builder().timeout(timeout).build().map_err(request)?;
    let resp = client.get(&url).send().await.map_err(request)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(request)?;
    serde_json::from_slice(&body).map_err(|e| StatusError::Body {
        url: url.clone(),
        status,
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_base_urls_and_bad_ones_are_named() {
        assert_eq!(base_url("127.0.0.1:8210").ok().as_deref(), Some("http://127.0.0.1:8210"));
        assert_eq!(
            base_url("https://poller.example:8210/").ok().as_deref(),
            Some("https://poller.example:8210")
        );
        for bad in ["", "http://x:1/v1", "http://:1"] {
            let err = base_url(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
