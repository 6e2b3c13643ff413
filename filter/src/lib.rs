//! vault-redirect's proxy-wasm filter: answers every request with a 307 to the active Vault
//! node (redirect mode) or points it at that node for Envoy to forward (proxy mode), from a
//! state each worker keeps in its own memory.
//!
//! `abi` is everything the module exports (Envoy's callbacks); `root` owns the long-poll to the
//! poller and the state; `request` answers requests from that state without any network wait;
//! `host` is the only module that calls the proxy-wasm host; `types` names the ABI's enums;
//! `config` and `sync` are pure and tested natively. No proxy-wasm SDK: see `abi`.

pub mod abi;
pub mod config;
pub mod host;
pub mod metrics;
pub mod request;
pub mod root;
pub mod sync;
pub mod types;

#[cfg(target_os = "wasi")]
extern "C" {
    /// Runs the module's static constructors (wasi-libc's environment among them).
    fn __wasm_call_ctors();
}

/// The reactor initialiser the host calls once, before any callback.
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: called once by the host before anything else runs, as wasi-libc requires.
    unsafe {
        __wasm_call_ctors();
    }
}
