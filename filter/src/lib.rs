//! vault-redirect's proxy-wasm filter: answers every request with a 307 to the active Vault
//! node, from a state each worker keeps in its own memory.
//!
//! `root` owns the long-poll to the poller and the state; `request` answers requests from that
//! state without any network wait; `host` is the only module that calls the proxy-wasm host;
//! `config` and `sync` are pure and tested natively.

pub mod config;
pub mod host;
pub mod metrics;
pub mod request;
pub mod root;
pub mod sync;

use proxy_wasm::traits::RootContext;

proxy_wasm::main! {{
    // No `proxy_wasm::set_log_level`: the filter logs through `host::log`, and should a panic
    // ever happen, std's own hook writes it to stderr, which Envoy's WASI layer logs. Leaving
    // the SDK's logger out keeps the .wasm smaller.
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
