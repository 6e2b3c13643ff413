//! Standalone redirect mode: the poller itself answers client requests with the filter's
//! 307 semantics, for users without Envoy (a drop-in for vault-redirector).
//!
//! The decision is `vault_redirect_core::decide` and the answer `vault_redirect_core::Answer`,
//! the very code the filter runs; this module only maps HTTP in and out. The `Location`
//! authority comes from the poller's state, never from the request. `/vault-redirector-health`
//! is answered here too, as vault-redirector answers it on its redirect port.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Version};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use vault_redirect_core::answer::{no_active_message, UNREDIRECTABLE};
use vault_redirect_core::{decide, Answer, Decision, RedirectPolicy};

use crate::context::AppState;
use crate::http::api::{error_response, health};
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

/// The `outcome` label of the standalone answers metric.
fn outcome(decision: &Decision) -> &'static str {
    match decision {
        Decision::Redirect(_) => "redirect",
        Decision::NoActive => "no_active",
        Decision::BadRequest(_) | Decision::PassThrough => "bad_request",
        Decision::PathTooLong => "too_long",
    }
}

/// `answer` as an HTTP response, or `None` when a header value cannot be sent (a `Location`
/// byte HTTP forbids; `decide` refuses control bytes, so this is a last guard).
fn response(mut answer: Answer) -> Option<Response> {
    let mut r = Response::new(Body::from(std::mem::take(&mut answer.body)));
    *r.status_mut() = StatusCode::from_u16(answer.status).ok()?;
    for (name, value) in answer.all_headers() {
        let value = HeaderValue::from_bytes(value).ok()?;
        r.headers_mut().insert(HeaderName::from_static(name), value);
    }
    Some(r)
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
    // The same prefix, and the same words when there is none, as the filter's view.
    let (prefix, reason) = {
        let s = rs.app.state.borrow();
        match s.active() {
            // The source's own scheme (Vault's api_addr) wins over --redirect-scheme, which
            // only stands in for what Consul does not record.
            Some(active) => match s.doc.scheme.map_or_else(
                || rs.policy.location_prefix(active),
                |scheme| RedirectPolicy { scheme, ..(*rs.policy).clone() }.location_prefix(active),
            ) {
                Ok(p) => (Some(p), String::new()),
                Err(_) => (None, UNREDIRECTABLE.to_string()),
            },
            None => (None, no_active_message(s.doc.reason.as_deref())),
        }
    };
    // No pass-through list in standalone mode: there is no upstream to pass to.
    let decision = decide(prefix.as_deref(), Some(target.as_bytes()), &[]);
    rs.app.metrics.redirects.get_or_create(&Outcome { outcome: outcome(&decision) }).inc();
    match Answer::to(decision, &reason).and_then(response) {
        Some(r) => r,
        None => {
            error_response(StatusCode::BAD_REQUEST, "request cannot be answered in HTTP".into())
        }
    }
}
