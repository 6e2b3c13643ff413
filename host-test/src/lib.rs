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

mod abi;
mod error;
mod host;
mod imports;
mod memory;
mod pairs;
pub mod scenario;
pub mod shipped;
mod state;

pub use abi::{Action, LogLevel, MetricType, Status};
pub use error::{HostError, Result};
pub use host::{
    Host, HttpCall, HttpCallResponse, LocalResponse, Request, RequestOutcome, UpstreamResponse, Vm,
};
pub use imports::ENVOY_IMPORTS;
pub use state::Metric;
