//! vault-redirect's proxy-wasm filter: answers every request with a 307 to the active Vault
//! node, from a state each worker keeps in its own memory.
//!
//! `abi` receives Envoy's callbacks; `root` owns the long-poll to the poller and the state;
//! `request` answers requests from that state without any network wait; `host` is the only
//! module that calls the proxy-wasm host; `config` and `sync` are pure and tested natively.

pub mod abi;
pub mod config;
pub mod host;
pub mod metrics;
pub mod request;
pub mod root;
pub mod sync;

#[cfg(target_os = "wasi")]
extern "C" {
    /// Runs the module's static constructors (wasi-libc's environment among them).
    fn __wasm_call_ctors();
}

/// The reactor initialiser the host calls once, before any callback. The filter registers
/// nothing with the SDK's dispatcher: `abi` dispatches (see the post-link step, filter/link).
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: called once by the host before anything else runs, as wasi-libc requires.
    unsafe {
        __wasm_call_ctors();
    }
}

#[link(wasm_import_module = "vault_redirect")]
extern "C" {
    /// No host provides this: the module cargo emits imports it (through
    /// [`vault_redirect_unlinked_guard`]) so that Envoy refuses to load it, naming it, rather
    /// than run the SDK's dispatcher in place of the filter's. The post-link step removes the
    /// guard, and with it the import.
    fn this_module_was_not_post_linked_build_it_with_scripts_build_sh();
}

/// Exported only to keep the import above in the module until the post-link step; never called.
#[no_mangle]
pub extern "C" fn vault_redirect_unlinked_guard() {
    // SAFETY: never runs: a module holding this import cannot be instantiated by a host.
    unsafe { this_module_was_not_post_linked_build_it_with_scripts_build_sh() }
}
