//! One request: read `:path`, decide, answer. Never waits on the network and never reads
//! anything but `:path`: the `Location` authority comes only from the worker's state. A
//! request keeps no state of its own, so it needs no context object and no clean-up callback.
//!
//! What each decision answers (status, headers, body) is `vault_redirect_core::Answer`, the
//! very answer the poller's standalone mode sends; this module only adds the debug header.

use vault_redirect_core::answer::MAX_HEADERS;
use vault_redirect_core::{decide, Answer, Decision};

use crate::config::{Mode, NoActive, UPSTREAM_HEADER, UPSTREAM_NAME_HEADER};
use crate::host;
use crate::metrics::RequestCounts;
use crate::root::WorkerState;
use crate::sync::View;
use crate::types::{Action, LogLevel, MapType};

/// Answers the request `context_id` (its request headers have arrived) from `worker`.
pub fn on_request_headers(context_id: u32, worker: &WorkerState) -> Action {
    if worker.config.mode == Mode::Proxy {
        return proxy(context_id, worker);
    }
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
    respond(context_id, worker, &view, answer)
}

/// Proxy mode: points the request at the active node by overwriting [`UPSTREAM_HEADER`], which
/// the `ORIGINAL_DST` cluster reads, and [`UPSTREAM_NAME_HEADER`], the name Envoy verifies the
/// node's certificate against (and sends as SNI), then lets it continue. Nothing the client
/// sent is read: both headers' old values (a client may send them) are replaced, never
/// appended to, and `:authority`/`Host` stay as sent because neither the cluster nor the TLS
/// check looks at them. Without a usable node, or if a header cannot be set, the request is
/// answered here like a redirect would be (503), so it never reaches the cluster with a
/// client's value.
fn proxy(context_id: u32, worker: &WorkerState) -> Action {
    let view = worker.view.borrow();
    let counts = &worker.counts;
    let reason = match &view.upstream {
        Some(upstream) => {
            let headers = MapType::HttpRequestHeaders;
            let set = host::replace_header(
                headers,
                UPSTREAM_NAME_HEADER,
                upstream.server_name.as_bytes(),
            )
            .and_then(|()| {
                host::replace_header(headers, UPSTREAM_HEADER, upstream.address.as_bytes())
            });
            match set {
                Ok(()) => {
                    RequestCounts::count(&counts.proxied);
                    return Action::Continue;
                }
                Err(e) => {
                    host::log(
                        LogLevel::Error,
                        &format!("#{context_id} cannot set the upstream headers: {e}"),
                    );
                    "the request could not be pointed at the active Vault node"
                }
            }
        }
        None => view.reason.as_str(),
    };
    RequestCounts::count(&counts.no_active);
    match Answer::to(Decision::NoActive, reason) {
        Some(answer) => respond(context_id, worker, &view, answer),
        // Not reached: a NoActive decision always has an answer. Refusing keeps it safe.
        None => Action::Pause,
    }
}

/// Sends `answer` (plus the debug header when configured) as the local response.
fn respond(context_id: u32, worker: &WorkerState, view: &View, answer: Answer) -> Action {
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
