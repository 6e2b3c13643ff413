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

