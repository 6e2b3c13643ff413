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

use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;

/// The root context the SDK's dispatcher creates when the module was not post-linked
/// (`filter/link`): the SDK then still owns the callbacks and would serve requests without our
/// dispatcher, so the VM refuses to start, saying why. The linked module never reaches it.
struct Unlinked;

impl Context for Unlinked {}

impl RootContext for Unlinked {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        host::log(
            LogLevel::Critical,
            "this vault_redirect_filter.wasm was not post-linked: build it with scripts/build.sh",
        );
        false
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        false
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Unlinked) });
}}
