//! The HTTP state API's handlers: `GET /v1/active` (at once, or as a long-poll with `index`
//! and `wait`), `GET /health` and `/vault-redirector-health`, `GET /metrics`, and for
//! operators the status page (`GET /`) and its document (`GET /v1/status`).
//!
//! Leaves: each handler maps a document (`doc`) or the long-poll (`longpoll`) to HTTP, and
//! only reads the state.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::time::Instant;

use crate::context::AppState;
use crate::doc::health::health_document;
use crate::longpoll::{longpoll_doc, longpoll_params, ActiveQuery};

/// The status page: one static HTML file with its CSS and script inline (no external assets),
/// which reads `/v1/status` and waits on `/v1/active`'s long-poll for the next change.
pub const STATUS_PAGE_HTML: &str = include_str!("status_page.html");

/// The state API router.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/v1/active", get(active))
        .route("/health", get(health))
        .route("/vault-redirector-health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/", get(status_page))
        .merge(crate::http::probes::routes())
        .with_state(app)
}

/// A JSON error in Vault's shape, `{"errors": [...]}`.
pub fn error_response(status: StatusCode, message: String) -> Response {
    let mut r = (status, vault_redirect_core::answer::vault_error_body(&message)).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
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
        crate::doc::status::status_document(&s, &app.info, waiters, Instant::now())
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
    let mut r = (StatusCode::OK, STATUS_PAGE_HTML).into_response();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_external_assets() {
        let page = STATUS_PAGE_HTML;
        for needle in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import", "url("] {
            assert!(!page.contains(needle), "the status page refers to {needle}");
        }
        assert!(page.contains("/v1/status") && page.contains("/v1/active?index="));
        // Data from Consul reaches the DOM only as text.
        assert!(!page.contains("innerHTML"), "the page must not build HTML from data");
    }
}
