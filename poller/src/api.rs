//! The HTTP state API: `GET /v1/active` (at once, or as a long-poll with `index` and `wait`),
//! `GET /health` and `/vault-redirector-health`, `GET /metrics`, and for operators the status
//! page (`GET /`) and its document (`GET /v1/status`, see `status`).
//!
//! Handlers only read the state; the watcher is the only writer. A long-poll parks on the
//! watch channel, which wakes it only when the version changes: waiters cost no CPU.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use vault_redirect_core::{HostChoice, RedirectPolicy, StateDoc};

use crate::metrics::Metrics;
use crate::state::{iso8601, Snapshot};

/// The long-poll wait when `index` is given without `wait`.
pub const DEFAULT_LONGPOLL_WAIT: Duration = Duration::from_secs(5 * 60);
/// Longer waits are cut to this.
pub const MAX_LONGPOLL_WAIT: Duration = Duration::from_secs(5 * 60);

/// What every handler reads.
#[derive(Clone)]
pub struct AppState {
    /// The watcher's state.
    pub state: watch::Receiver<Snapshot>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Becomes true at shutdown: long-polls answer at once.
    pub stop: watch::Receiver<bool>,
    /// Fixed facts for the health document.
    pub info: Arc<Info>,
    /// The state's sender, used only to raise the version past a sibling replica's (see
    /// `replicas`); the watcher stays the only writer of the document's content.
    pub versions: watch::Sender<Snapshot>,
}

/// Facts the health document reports that never change while running.
#[derive(Clone, Debug)]
pub struct Info {
    /// Consul's `host:port`.
    pub consul_host_port: String,
    /// How `active_vault` names the node (as the redirects would).
    pub policy: RedirectPolicy,
    /// `--max-stale`, for the explanation while serving a stale state.
    pub max_stale: Duration,
    /// The Consul service watched.
    pub service: String,
    /// The tag that marks the active node.
    pub active_tag: String,
    /// `--max-waiters`: long-polls parked at once before new ones are answered at once.
    pub max_waiters: u64,
}

/// The state API router.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/v1/active", get(active))
        .route("/health", get(health))
        .route("/vault-redirector-health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/", get(status_page))
        .merge(crate::probes::routes())
        .with_state(app)
}

/// A JSON error in Vault's shape, `{"errors": [...]}`.
pub fn error_response(status: StatusCode, message: String) -> Response {
    let mut r = (status, vault_redirect_core::answer::vault_error_body(&message)).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The query of `/v1/active`.
#[derive(Debug, Deserialize)]
pub struct ActiveQuery {
    /// The version the client holds.
    pub index: Option<String>,
    /// How long it may wait for a newer one.
    pub wait: Option<String>,
}

/// Decrements the waiter gauge however the request ends (answer, shutdown, client gone).
struct WaiterGuard(Arc<Metrics>);

impl WaiterGuard {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.longpoll_waiters.inc();
        WaiterGuard(metrics)
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.0.longpoll_waiters.dec();
    }
}

/// Up to `wait / 16` more, as Consul does, so waiters that started together end apart.
fn jitter(wait: Duration) -> Duration {
    let max_ms = (wait / 16).as_millis() as u64;
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..=max_ms))
}

/// The `index` and `wait` of a `/v1/active` request, or why it gets a 400.
pub fn longpoll_params(
    index: Option<&str>,
    wait: Option<&str>,
) -> Result<(Option<u64>, Duration), String> {
    let index = match index.map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            let raw = index.unwrap_or_default();
            return Err(format!("invalid index {raw:?}: expected a non-negative integer"));
        }
    };
    let wait = match wait.map(crate::duration::parse) {
        None => DEFAULT_LONGPOLL_WAIT,
        Some(Ok(d)) => d.min(MAX_LONGPOLL_WAIT),
        Some(Err(e)) => return Err(format!("invalid wait: {e}")),
    };
    Ok((index, wait))
}

/// The document a `/v1/active` request gets: at once without `index`; with it, once the
/// version passes `index`, the wait (plus jitter) ends, or the poller stops. `None` when
/// `gone` resolves first (the client left).
pub async fn longpoll_doc(
    app: &AppState,
    index: Option<u64>,
    wait: Duration,
    gone: impl Future<Output = ()>,
) -> Option<StateDoc> {
    let parked = u64::try_from(app.metrics.longpoll_waiters.get()).unwrap_or(0);
    if index.is_some() && parked >= app.info.max_waiters {
        // Holding one more would grow memory without bound; the caller gets the current
        // document now, as a long-poll whose wait ended.
        app.metrics.longpoll_over_limit.inc();
    } else if let Some(n) = index {
        let _guard = WaiterGuard::new(app.metrics.clone());
        let max_stale = app.info.max_stale;
        app.versions
            .send_if_modified(|s| crate::replicas::catch_up(s, n, max_stale, Instant::now()));
        let mut state = app.state.clone();
        let mut stop = app.stop.clone();
        let wait = wait + jitter(wait);
        tokio::select! {
            _ = state.wait_for(|s| s.doc.version > n) => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
            _ = gone => return None,
        }
    }
    let mut doc = app.state.borrow().doc_at(Instant::now());
    // Consul does not record Vault's scheme: tell filters the one this poller redirects with.
    doc.scheme = Some(app.info.policy.scheme);
    Some(doc)
}

async fn active(State(app): State<AppState>, Query(q): Query<ActiveQuery>) -> Response {
    let (index, wait) = match longpoll_params(q.index.as_deref(), q.wait.as_deref()) {
        Ok(p) => p,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
    };
    let Some(doc) = longpoll_doc(&app, index, wait, std::future::pending()).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let mut r = (StatusCode::OK, doc.to_json()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-vault-redirect-version", HeaderValue::from(doc.version));
    r
}

/// The health document and whether it is healthy.
pub fn health_document(
    snapshot: &Snapshot,
    info: &Info,
    now: Instant,
) -> (bool, serde_json::Value) {
    let doc = snapshot.doc_at(now);
    let active_vault = doc.active.as_ref().map(|a| {
        let host = match info.policy.host {
            HostChoice::Address => &a.address,
            HostChoice::Node => &a.node,
        };
        let port = info.policy.port.unwrap_or(a.port);
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    });
    let mut problems: Vec<String> = Vec::new();
    if let Some(reason) = &doc.reason {
        problems.push(format!("no active Vault node: {reason}"));
    }
    if let Some(err) = &snapshot.consul_error {
        if doc.active.is_some() {
            let left =
                snapshot.age(now).map(|a| info.max_stale.saturating_sub(a)).unwrap_or_default();
            problems.push(format!(
                "Consul is failing ({err}); serving the last known active node for up to {} more",
                crate::duration::display(Duration::from_secs(left.as_secs()))
            ));
        } else {
            problems.push(format!("Consul is failing: {err}"));
        }
    }
    if snapshot.candidates.len() > 1 {
        problems.push(format!(
            "{} nodes qualify as active ({}); serving {} (newest registration)",
            snapshot.candidates.len(),
            snapshot.candidates.join(", "),
            snapshot.candidates[0]
        ));
    }
    for refused in &snapshot.refused_targets {
        problems.push(format!("refused redirect target {refused}"));
    }
    if !snapshot.known_leader {
        problems.push("Consul reports no known leader (stale read)".to_string());
    }
    let healthy = doc.active.is_some();
    let body = json!({
        "healthy": healthy,
        "application": "vault-redirect-poller",
        "source": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "consul_host_port": info.consul_host_port,
        "active_vault": active_vault,
        "last_consul_poll": doc.last_consul_ok_unix_ms.map(iso8601),
        "state_version": doc.version,
        "consul_index": doc.consul_index,
        "age_ms": doc.age_ms,
        "active_candidates": snapshot.candidates,
        "problems": problems,
    });
    (healthy, body)
}

/// `/health` and `/vault-redirector-health`: 200 when an active node is served, else 503.
pub async fn health(State(app): State<AppState>) -> Response {
    let (healthy, body) = {
        let s = app.state.borrow();
        health_document(&s, &app.info, Instant::now())
    };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `GET /v1/status`: the status document (nodes, changes, ages, waiters).
async fn status(State(app): State<AppState>) -> Response {
    let waiters = app.metrics.longpoll_waiters.get();
    let doc = {
        let s = app.state.borrow();
        crate::status::status_document(&s, &app.info, waiters, Instant::now())
    };
    let body = serde_json::to_string(&doc).unwrap_or_default();
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /`: the status page. Its only script is inline and it fetches only this origin.
async fn status_page() -> Response {
    let mut r = (StatusCode::OK, crate::status::STATUS_PAGE_HTML).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Whether the client asked for Prometheus' text format rather than OpenMetrics: it names
/// `text/plain` and not `application/openmetrics-text` (Prometheus itself asks for both and
/// prefers OpenMetrics; promtool's input and `curl -H 'Accept: text/plain'` want text).
fn wants_text_format(headers: &axum::http::HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    accept.contains("text/plain") && !accept.contains("application/openmetrics-text")
}

async fn metrics(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    {
        let now = Instant::now();
        let s = app.state.borrow();
        app.metrics.state_age.set(now.saturating_duration_since(s.changed_at).as_secs_f64());
        // Before the first good answer there is no age: report the time since start-up as
        // far as the state knows it (its initial change).
        let since_ok = s.age(now).unwrap_or_else(|| now.saturating_duration_since(s.changed_at));
        app.metrics.since_consul_ok.set(since_ok.as_secs_f64());
    }
    if wants_text_format(&headers) {
        let mut r = (StatusCode::OK, app.metrics.encode_text()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return r;
    }
    let mut r = (StatusCode::OK, app.metrics.encode()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
