//! One request: read `:path`, decide, answer. Never waits on the network and never reads
//! anything but `:path`: the `Location` authority comes only from the worker's state. A
//! request keeps no state of its own, so it needs no context object and no clean-up callback.

use vault_redirect_core::{decide, Decision};

use crate::config::NoActive;
use crate::host;
use crate::metrics::RequestCounts;
use crate::root::Shared;
use crate::types::{Action, LogLevel, MapType};

/// Answers the request `context_id` (its request headers have arrived) from `shared`.
pub fn on_request_headers(context_id: u32, shared: &Shared) -> Action {
    let path = match host::header(MapType::HttpRequestHeaders, ":path") {
        Ok(p) => p,
        Err(e) => {
            host::log(LogLevel::Warn, &format!("#{context_id} cannot read :path: {e}"));
            None
        }
    };
    let view = shared.view.borrow();
    let decision =
        decide(view.prefix.as_deref(), path.as_deref(), &shared.config.pass_through_paths);
    let debug = shared.config.debug_header.then(|| {
        let age = host::now_ms().saturating_sub(view.heard_ms);
        format!("version={}; age_ms={}", view.version, age)
    });
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(4);
    if let Some(d) = &debug {
        headers.push(("x-vault-redirect-state", d.as_bytes()));
    }
    let result = match decision {
        Decision::Redirect(location) => {
            RequestCounts::count(&shared.counts.redirects);
            headers.push(("location", &location));
            headers.push(("cache-control", b"no-store"));
            host::send_response(307, &headers, b"")
        }
        Decision::PassThrough => {
            RequestCounts::count(&shared.counts.pass_through);
            return Action::Continue;
        }
        Decision::NoActive => {
            RequestCounts::count(&shared.counts.no_active);
            if shared.config.no_active == NoActive::PassThrough {
                return Action::Continue;
            }
            let body = vault_error_body(&view.reason);
            headers.push(("retry-after", b"1"));
            headers.push(("content-type", b"application/json"));
            headers.push(("cache-control", b"no-store"));
            host::send_response(503, &headers, &body)
        }
        Decision::BadRequest(why) => {
            RequestCounts::count(&shared.counts.bad_requests);
            headers.push(("content-type", b"application/json"));
            host::send_response(400, &headers, &vault_error_body(why))
        }
        Decision::PathTooLong => {
            RequestCounts::count(&shared.counts.bad_requests);
            headers.push(("content-type", b"application/json"));
            host::send_response(414, &headers, &vault_error_body("request path is too long"))
        }
    };
    if let Err(e) = result {
        host::log(LogLevel::Error, &format!("#{context_id} cannot send the local response: {e}"));
    }
    // After a local response Envoy must not run the rest of the chain for this request.
    Action::Pause
}

/// Vault's error shape, `{"errors":["..."]}`, so Vault clients show the message.
fn vault_error_body(message: &str) -> Vec<u8> {
    let mut body = String::with_capacity(message.len() + 16);
    body.push_str("{\"errors\":[");
    vault_redirect_core::json::write_str(&mut body, message);
    body.push_str("]}");
    body.into_bytes()
}
