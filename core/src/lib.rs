//! The one definition of what the poller tells filters, and the pure decisions both sides make
//! from it.
//!
//! This crate owns the state document (`state`), the validation of a redirect target
//! (`target`), the per-request decision (`redirect`) and the answer each decision gets
//! (`answer`). It must never do I/O, never depend on proxy-wasm or tokio, and never panic on
//! input: the filter runs this code inside every Envoy worker, where a panic kills the VM.

pub mod answer;
pub mod json;
pub mod redirect;
pub mod state;
pub mod target;

pub use answer::Answer;
pub use redirect::{decide, Decision, HostChoice, RedirectPolicy};
pub use state::{ActiveNode, Scheme, StateDoc};
pub use target::{Target, TargetError};
