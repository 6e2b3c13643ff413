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
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Installs the SDK's panic hook, which logs a panic's message before the VM aborts; the
    // filter itself never logs through the `log` crate (see `host::log`).
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
