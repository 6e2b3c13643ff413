//! Standalone redirect mode: the poller itself answers client requests with the filter's
//! 307 semantics, for users without Envoy (a drop-in for vault-redirector).
//!
//! The decision is `vault_redirect_core::decide`, the very code the filter runs; this module
//! only maps HTTP in and out. The `Location` authority comes from the poller's state, never
//! from the request. `/vault-redirector-health` is answered here too, as vault-redirector
//! answers it on its redirect port.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use vault_redirect_core::{decide, Decision, RedirectPolicy};

use crate::api::{error_response, health, AppState};
use crate::metrics::Outcome;

/// What the redirect handler reads.
#[derive(Clone)]
struct RedirectState {
    app: AppState,
    policy: Arc<RedirectPolicy>,
}

/// The standalone-mode router.
pub fn router(app: AppState, policy: RedirectPolicy) -> Router {
    let health_routes =
        Router::new().route("/vault-redirector-health", get(health)).with_state(app.clone());
    let redirects = Router::new()
        .fallback(redirect)
        .with_state(RedirectState { app, policy: Arc::new(policy) });
    health_routes.merge(redirects)
}

async fn redirect(State(rs): State<RedirectState>, request: Request) -> Response {
    let uri = request.uri();
    // Origin-form targets reach `decide` as they came; any other form (absolute, authority,
    // `*`) is passed whole so `decide` refuses it rather than gluing it to our authority.
    // h2 (over TLS) always carries :scheme and :authority beside :path, so there the target
    // is :path alone; the authority is ignored as the Host header is.
    let h2 = request.version() == Version::HTTP_2;
    let target: String = if !h2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        uri.to_string()
    } else {
        uri.path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_default()
    };
    let (prefix, reason) = {
        let s = rs.app.state.borrow();
        match s.active() {
            Some(active) => match rs.policy.location_prefix(active) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(format!("active node cannot be redirected to: {e}"))),
            },
            None => (None, s.doc.reason.clone()),
        }
    };
    let count =
        |outcome: &'static str| rs.app.metrics.redirects.get_or_create(&Outcome { outcome }).inc();
    match decide(prefix.as_deref(), Some(target.as_bytes()), &[]) {
        Decision::Redirect(location) => match HeaderValue::from_bytes(&location) {
            Ok(value) => {
                count("redirect");
                let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
                r.headers_mut().insert(header::LOCATION, value);
                // As the filter does: a cached redirect would outlive a failover.
                r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Err(_) => {
                count("bad_request");
                error_response(
                    StatusCode::BAD_REQUEST,
                    "request path cannot be put in a Location header".into(),
                )
            }
        },
        Decision::NoActive => {
            count("no_active");
            let why = reason.unwrap_or_else(|| "unknown".into());
            let mut r = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no active Vault node: {why}"),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Decision::BadRequest(why) => {
            count("bad_request");
            error_response(StatusCode::BAD_REQUEST, why.to_string())
        }
        Decision::PathTooLong => {
            count("too_long");
            error_response(StatusCode::URI_TOO_LONG, "request path is too long to redirect".into())
        }
        // No pass-through list in standalone mode: there is no upstream to pass to.
        Decision::PassThrough => {
            count("bad_request");
            error_response(StatusCode::NOT_FOUND, "no upstream in standalone mode".into())
        }
    }
}
