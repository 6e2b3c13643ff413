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

use crate::api::AppState;
use crate::state::{Snapshot, REASON_CONSUL_DOWN};

/// The probe routes, to merge into the state API's router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/livez", get(livez)).route("/readyz", get(readyz))
}

/// Why this replica should not receive filters' long-polls, or `None` when it should.
pub fn not_ready_because(
    snapshot: &Snapshot,
    max_stale: std::time::Duration,
    now: Instant,
) -> Option<String> {
    let Some(age) = snapshot.age(now) else {
        return Some("no answer from Consul yet".to_string());
    };
    if snapshot.doc.active.is_none() && snapshot.doc.reason.as_deref() == Some(REASON_CONSUL_DOWN) {
        return Some(REASON_CONSUL_DOWN.to_string());
    }
    if age > max_stale {
        return Some(format!("view of Consul is {} ms old, beyond --max-stale", age.as_millis()));
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vault_redirect_core::StateDoc;

    #[tokio::test(start_paused = true)]
    async fn ready_means_a_current_view_of_consul_not_an_active_vault_node() {
        let t0 = Instant::now();
        let max_stale = Duration::from_secs(60);
        let mut s = Snapshot::initial(t0);
        assert!(not_ready_because(&s, max_stale, t0).is_some(), "starting");
        // An election: Consul answers, no node is active. Still ready.
        s.doc = StateDoc::none("no instance of service \"vault\" is tagged \"active\"");
        s.confirmed = Some(t0);
        assert_eq!(not_ready_because(&s, max_stale, t0 + Duration::from_secs(1)), None);
        // Consul silent beyond max-stale: not ready.
        assert!(not_ready_because(&s, max_stale, t0 + Duration::from_secs(61)).is_some());
        // The watcher gave up on Consul.
        s.doc = StateDoc::none(REASON_CONSUL_DOWN);
        assert!(not_ready_because(&s, max_stale, t0).is_some());
    }
}
