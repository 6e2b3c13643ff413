//! The errors the library hands to its embedder (tests, the CLI), and the outcome of a host
//! call that did not succeed ([`Fault`]): a status for the guest, or a trap.
//!
//! A guest trap is an error value carrying the wasm backtrace, never a host panic.

use std::path::PathBuf;

use crate::abi::Status;

/// Why the host could not do what the embedder asked.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The `.wasm` file could not be read.
    #[error("cannot read the wasm module {path}: {source}")]
    Read {
        /// The path that was given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// wasmtime could not set up its engine.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// wasmtime refused to compile the module.
    #[error("cannot compile the wasm module: {0}")]
    Compile(String),
    /// The module imports something this host (and Envoy) does not provide, or the like.
    #[error("cannot instantiate the wasm module: {0}")]
    Instantiate(String),
    /// The module lacks an export the host needs.
    #[error("the wasm module does not export `{0}`")]
    MissingExport(String),
    /// An export has another signature than the ABI's.
    #[error("the export `{name}` has an unexpected signature: {reason}")]
    BadExport {
        /// The export's name.
        name: String,
        /// What wasmtime said.
        reason: String,
    },
    /// The guest trapped (panic, `unreachable`, out of fuel, bad memory access); `details`
    /// holds wasmtime's message with the wasm backtrace and the guest's last stderr lines.
    #[error("the guest trapped in {function}: {details}")]
    Trap {
        /// The export that was running.
        function: String,
        /// The trap message and backtrace.
        details: String,
    },
    /// An earlier trap failed this VM; like Envoy, it refuses further calls.
    #[error("the VM failed earlier ({0}) and refuses further calls")]
    VmFailed(String),
    /// No http call with this token is waiting for an answer.
    #[error("no pending http call has token {0}")]
    UnknownHttpCall(u32),
    /// No paused request has this context id.
    #[error("no open request has context id {0}")]
    UnknownRequest(u32),
    /// A lock shared between VMs was poisoned by a panic in another thread.
    #[error("the state shared between VMs was poisoned by a panic in another thread")]
    Poisoned,
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, HostError>;

/// Why a host call did not succeed.
pub(crate) enum Fault {
    /// A status (or WASI errno) to return to the guest.
    Code(i32),
    /// Something the guest cannot recover from (its allocator trapped, the module has no memory):
    /// the call traps and the embedder sees the error.
    Trap(wasmtime::Error),
}

impl From<Status> for Fault {
    fn from(status: Status) -> Self {
        Fault::Code(status.code())
    }
}

/// The result every host call body returns.
pub(crate) type HostResult<T = ()> = std::result::Result<T, Fault>;

pub(crate) fn trap(message: impl Into<String>) -> Fault {
    Fault::Trap(wasmtime::Error::msg(message.into()))
}
