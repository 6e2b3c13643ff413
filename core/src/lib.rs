//! The one definition of what the poller tells filters, and the pure decisions both sides make
//! from it.
//!
//! This crate owns the state document (`state`), the validation of a redirect target
//! (`target`) and the per-request decision (`redirect`). It must never do I/O, never depend on
//! proxy-wasm or tokio, and never panic on input: the filter runs this code inside every Envoy
//! worker, where a panic kills the VM.

pub mod json;
pub mod redirect;
pub mod state;
pub mod target;

pub use redirect::{decide, Decision, HostChoice, RedirectPolicy, Scheme};
pub use state::{ActiveNode, StateDoc};
pub use target::{Target, TargetError};
