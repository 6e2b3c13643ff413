//! Liveness and readiness of the poller itself, for Envoy's active health checks and
//! Kubernetes probes: `GET /livez` and `GET /readyz`.
//!
//! Both say nothing about Vault. `/health` answers 503 while Vault elects a leader, which is
//! right for an operator and wrong for a load balancer: every replica would be ejected (or
//! restarted) at once, exactly when filters most need an answer. `/readyz` answers 503 only
//! when this replica's own view of Consul is missing or older than `--max-stale`, so a
//! replica cut off from Consul leaves the pool while its siblings keep serving.
//!
//! Handlers only read the state.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::time::Instant;

use crate::context::AppState;
use crate::doc::readiness::not_ready_because;

/// The probe routes, to merge into the state API's router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/livez", get(livez)).route("/readyz", get(readyz))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `200` whenever the process serves HTTP: restart only a poller that stopped answering.
async fn livez() -> Response {
    json_response(StatusCode::OK, json!({ "live": true }))
}

/// `200` while this replica's view of Consul is current (whatever Vault's state), else `503`.
async fn readyz(State(app): State<AppState>) -> Response {
    let why = {
        let s = app.state.borrow();
        not_ready_because(&s, app.info.max_stale, Instant::now())
    };
    match why {
        None => json_response(StatusCode::OK, json!({ "ready": true })),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "reason": reason }),
        ),
    }
}
