//! One request: read `:path`, decide, answer. Never waits on the network and never reads
//! anything but `:path`: the `Location` authority comes only from the worker's state. A
//! request keeps no state of its own, so it needs no context object and no clean-up callback.
//!
//! What each decision answers (status, headers, body) is `vault_redirect_core::Answer`, the
//! very answer the poller's standalone mode sends; this module only adds the debug header.

use vault_redirect_core::answer::MAX_HEADERS;
use vault_redirect_core::{decide, Answer, Decision};

use crate::config::NoActive;
use crate::host;
use crate::metrics::RequestCounts;
use crate::root::WorkerState;
use crate::types::{Action, LogLevel, MapType};

/// Answers the request `context_id` (its request headers have arrived) from `worker`.
pub fn on_request_headers(context_id: u32, worker: &WorkerState) -> Action {
    let path = match host::header(MapType::HttpRequestHeaders, ":path") {
        Ok(p) => p,
        Err(e) => {
            host::log(LogLevel::Warn, &format!("#{context_id} cannot read :path: {e}"));
            None
        }
    };
    let view = worker.view.borrow();
    let decision =
        decide(view.prefix.as_deref(), path.as_deref(), &worker.config.pass_through_paths);
    let counts = &worker.counts;
    RequestCounts::count(match &decision {
        Decision::Redirect(_) => &counts.redirects,
        Decision::PassThrough => &counts.pass_through,
        Decision::NoActive => &counts.no_active,
        Decision::BadRequest(_) | Decision::PathTooLong => &counts.bad_requests,
    });
    if decision == Decision::NoActive && worker.config.no_active == NoActive::PassThrough {
        return Action::Continue;
    }
    let Some(answer) = Answer::to(decision, &view.reason) else {
        return Action::Continue;
    };
    let debug = worker.config.debug_header.then(|| {
        let age = host::now_ms().saturating_sub(view.heard_ms);
        format!("version={}; age_ms={}", view.version, age)
    });
    // The debug header and the answer's, on the stack: no allocation per request.
    let mut headers: [(&str, &[u8]); MAX_HEADERS + 1] = [("", b""); MAX_HEADERS + 1];
    let mut len = 0;
    let mut push = |header| {
        if let Some(slot) = headers.get_mut(len) {
            *slot = header;
            len += 1;
        }
    };
    if let Some(d) = &debug {
        push(("x-vault-redirect-state", d.as_bytes()));
    }
    if let Some(location) = &answer.location {
        push(("location", location));
    }
    for &header in answer.headers {
        push(header);
    }
    let result = host::send_response(
        u32::from(answer.status),
        headers.get(..len).unwrap_or_default(),
        &answer.body,
    );
    if let Err(e) = result {
        host::log(LogLevel::Error, &format!("#{context_id} cannot send the local response: {e}"));
    }
    // After a local response Envoy must not run the rest of the chain for this request.
    Action::Pause
}
