//! The filter's side of the proxy-wasm ABI 0.2.1: every function the module exports (the
//! callbacks, the allocator the host writes into, the ABI version marker), dispatched here with
//! no SDK.
//!
//! Why: Envoy enters the VM for every callback a module exports, on every request; the SDK
//! exports all of them and gives every request a boxed context in a hash map until
//! `proxy_on_delete`, and its trait objects keep every default callback in the module (122 KB
//! after wasm-metadce, against the 100 KB goal). A redirect keeps no per-request state: a
//! request needs `proxy_on_context_create` and `proxy_on_request_headers`, nothing else, and a
//! module without `proxy_on_delete` is never entered for it (docs/architecture.md has the
//! measured choice). The host imports are declared in `host.rs`, the ABI's enums in `types.rs`.
//!
//! Root contexts live in a per-worker registry. Requests find theirs through the context id
//! Envoy hands to `proxy_on_context_create`, which it calls right before
//! `proxy_on_request_headers` for the same stream; a small ring of recent creations bridges
//! the two calls. Nothing here panics: a callback for an id it does not know is logged and
//! answered with the ABI's neutral value.

use std::alloc::Layout;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

use crate::host;
use crate::request;
use crate::root::{Root, WorkerState};
use crate::types::{Action, LogLevel};

/// Request contexts remembered between their creation and their request headers. Envoy makes
/// the two calls back to back for a stream; any size above one only adds slack for a host that
/// interleaves streams.
const RECENT: usize = 16;

/// Which root context recent request contexts belong to: (request id, root id) by request id
/// modulo [`RECENT`]. A newer context in the same slot replaces an older one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recent([(u32, u32); RECENT]);

impl Recent {
    /// Nothing remembered.
    pub const EMPTY: Recent = Recent([(0, 0); RECENT]);

    fn slot(context_id: u32) -> usize {
        usize::try_from(context_id).unwrap_or(0) % RECENT
    }

    /// Remembers that request context `context_id` belongs to `root_context_id`.
    pub fn record(&mut self, context_id: u32, root_context_id: u32) {
        if let Some(entry) = self.0.get_mut(Self::slot(context_id)) {
            *entry = (context_id, root_context_id);
        }
    }

    /// The root of `context_id`, if still remembered. Id 0 is never a request context.
    pub fn root_of(&self, context_id: u32) -> Option<u32> {
        match self.0.get(Self::slot(context_id)) {
            Some(&(id, root)) if id == context_id && id != 0 => Some(root),
            _ => None,
        }
    }
}

thread_local! {
    /// This worker's root contexts (one per plugin configuration using this VM; usually one).
    static ROOTS: RefCell<Vec<Root>> = const { RefCell::new(Vec::new()) };
    /// Recent request contexts and their roots, changed in place (a request pays for one slot,
    /// not for copying the ring).
    static CREATED: RefCell<Recent> = const { RefCell::new(Recent::EMPTY) };
}

/// Runs `f` on the root context `context_id`, or logs why it cannot.
fn with_root<T>(context_id: u32, callback: &str, neutral: T, f: impl FnOnce(&mut Root) -> T) -> T {
    ROOTS.with(|roots| {
        let Ok(mut roots) = roots.try_borrow_mut() else {
            // Envoy defers callbacks that would re-enter the VM; a host that does not gets this.
            host::log(
                LogLevel::Error,
                &format!("#{context_id} {callback} re-entered the filter; ignored"),
            );
            return neutral;
        };
        match roots.iter_mut().find(|r| r.context_id() == context_id) {
            Some(root) => f(root),
            None => {
                host::log(
                    LogLevel::Error,
                    &format!("#{context_id} {callback} for an unknown root context; ignored"),
                );
                neutral
            }
        }
    })
}

/// What a request of `root_context_id` reads: that root's state, else the newest configured
/// root's (a request context the ring lost), else a placeholder that answers 503.
fn state_for(context_id: u32, root_context_id: Option<u32>) -> Rc<WorkerState> {
    let found = ROOTS.with(|roots| {
        let roots = roots.try_borrow().ok()?;
        let by_id = root_context_id
            .and_then(|id| roots.iter().find(|r| r.context_id() == id)?.worker_state().cloned());
        by_id.or_else(|| roots.iter().rev().find_map(|r| r.worker_state().cloned()))
    });
    found.unwrap_or_else(|| {
        host::log(
            LogLevel::Warn,
            &format!("#{context_id} request before any configuration: answering 503"),
        );
        Rc::new(WorkerState::unconfigured())
    })
}

/// Marks the module as written against ABI 0.2.1; never called (Envoy reads the export's name).
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// `proxy_on_memory_allocate`: room for a buffer the host is about to hand the filter (a header
/// value, the plugin configuration, a poll answer). The filter takes it back as a `Vec<u8>` of
/// exactly `size` bytes (`host.rs`), so it is allocated with that layout. Null, the ABI's
/// failure, when the memory cannot grow.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    if size == 0 {
        // What an empty `Vec<u8>` holds: never read, never freed.
        return NonNull::<u8>::dangling().as_ptr();
    }
    match Layout::array::<u8>(size) {
        // SAFETY: the layout has a non-zero size; a null return is passed on as the failure.
        Ok(layout) => unsafe { std::alloc::alloc(layout) },
        Err(_) => std::ptr::null_mut(),
    }
}

/// `proxy_on_context_create`: a root context (root id 0) joins the registry; a request context
/// is remembered until its request headers arrive.
#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        ROOTS.with(|roots| match roots.try_borrow_mut() {
            Ok(mut roots) => {
                roots.retain(|r| r.context_id() != context_id);
                roots.push(Root::new(context_id));
            }
            Err(_) => host::log(
                LogLevel::Error,
                &format!("#{context_id} created while the filter ran; ignored"),
            ),
        });
        return;
    }
    CREATED.with(|created| match created.try_borrow_mut() {
        Ok(mut recent) => recent.record(context_id, root_context_id),
        // Unreachable in a single-threaded VM; the request then falls back to the newest root.
        Err(_) => host::log(LogLevel::Error, &format!("#{context_id} created re-entrantly")),
    });
}

/// `proxy_on_request_headers`: the whole of a request's work. (`end_of_stream` is an i32 on the
/// wire; taken as `u32`, since a host passing anything but 0 or 1 must not make a `bool` invalid.)
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> Action {
    let root_context_id =
        CREATED.with(|created| created.try_borrow().ok().and_then(|r| r.root_of(context_id)));
    let state = state_for(context_id, root_context_id);
    request::on_request_headers(context_id, &state)
}

/// `proxy_on_vm_start`: nothing to do (the VM configuration is unused).
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

/// `proxy_on_configure`: validates and applies the plugin configuration.
#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> bool {
    with_root(context_id, "configure", false, Root::on_configure)
}

/// `proxy_on_tick`: the root context's timer.
#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with_root(context_id, "tick", (), Root::on_tick);
}

/// `proxy_on_http_call_response`: the answer to a root context's long-poll.
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token_id: u32,
    num_headers: usize,
    _body_size: usize,
    _num_trailers: usize,
) {
    with_root(context_id, "http call response", (), |root| {
        root.on_http_call_response(token_id, num_headers)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_finds_its_root_until_a_newer_context_takes_its_slot() {
        let mut recent = Recent::EMPTY;
        assert_eq!(recent.root_of(5), None);
        recent.record(5, 1);
        recent.record(6, 2);
        assert_eq!((recent.root_of(5), recent.root_of(6)), (Some(1), Some(2)));
        // Interleaved streams of two roots, as many as the ring holds, all resolve.
        for id in 100..100 + RECENT as u32 {
            recent.record(id, id % 2 + 1);
        }
        for id in 100..100 + RECENT as u32 {
            assert_eq!(recent.root_of(id), Some(id % 2 + 1), "context {id}");
        }
        // One more takes the oldest slot: that context is no longer known (the caller then
        // falls back to the newest configured root), never mistaken for another's.
        recent.record(100 + RECENT as u32, 9);
        assert_eq!(recent.root_of(100), None);
        assert_eq!(recent.root_of(100 + RECENT as u32), Some(9));
    }

    #[test]
    fn context_zero_is_never_a_request() {
        assert_eq!(Recent::EMPTY.root_of(0), None);
    }
}
