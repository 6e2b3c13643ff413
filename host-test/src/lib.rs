//! host-test: a wasmtime host for the proxy-wasm ABI 0.2.1 that runs the very `.wasm` Envoy runs,
//! deterministically (virtual clock, seeded randomness, scripted http call answers, metered fuel).
//!
//! A [`Host`] is one simulated Envoy process: the compiled module, its configuration, and the
//! shared data, clock and stats its workers share. Each [`Vm`] is one worker with its own wasm
//! instance and root context.
//!
//! ```no_run
//! use host_test::{Host, HttpCallResponse};
//! # fn main() -> Result<(), host_test::HostError> {
//! let host = Host::new("filter.wasm")?.with_plugin_config(r#"{"poller_cluster":"poller"}"#);
//! let mut vm = host.start_vm()?;
//! assert!(vm.configure_result());
//! vm.tick()?;
//! let call = vm.pending_http_calls().remove(0);
//! vm.respond_http_call(call.token, HttpCallResponse::new(200, r#"{"version":1}"#))?;
//! let outcome = vm.send_request(&[(":method", "GET"), (":path", "/v1/x")])?;
//! println!("{:?}", outcome.local_response);
//! # Ok(()) }
//! ```
//!
//! Host state lives in the wasmtime `Store` (per VM) and in the host's shared world (per host):
//! there are no globals, so tests run in parallel.

// Everything but `shipped` is the host itself, behind the default `runtime` feature: a crate
// that only needs to find the shipped filter (the demo, the benches) does not build wasmtime.
#[cfg(feature = "runtime")]
mod abi;
#[cfg(feature = "runtime")]
mod error;
#[cfg(feature = "runtime")]
mod exchange;
#[cfg(feature = "runtime")]
mod host;
#[cfg(feature = "runtime")]
mod imports;
#[cfg(feature = "runtime")]
mod memory;
#[cfg(feature = "runtime")]
mod pairs;
#[cfg(feature = "runtime")]
pub mod scenario;
pub mod shipped;
#[cfg(feature = "runtime")]
mod state;
#[cfg(feature = "runtime")]
mod vm;

#[cfg(feature = "runtime")]
pub use abi::{Action, LogLevel, MetricType, Status};
#[cfg(feature = "runtime")]
pub use error::{HostError, Result};
#[cfg(feature = "runtime")]
pub use exchange::{
    HttpCall, HttpCallResponse, LocalResponse, Request, RequestOutcome, UpstreamResponse,
};
#[cfg(feature = "runtime")]
pub use host::Host;
#[cfg(feature = "runtime")]
pub use imports::ENVOY_IMPORTS;
#[cfg(feature = "runtime")]
pub use state::Metric;
#[cfg(feature = "runtime")]
pub use vm::Vm;
