//! Context plumbing: `proxy_set_effective_context`, `proxy_done`,
//! `proxy_call_foreign_function`.
//!
//! No foreign functions are registered, so every call answers `NotFound` (as Envoy does for a
//! name it does not know), which the SDK maps to an `Err`.

use wasmtime::Linker;

use super::host_fn;
use crate::abi::Status;
use crate::memory::{check, read};
use crate::state::VmState;

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    host_fn!(linker, "env", "proxy_set_effective_context", |c, id: i32| {
        let id = id as u32;
        let state = c.data_mut();
        if id != state.root_context_id && !state.streams.contains_key(&id) {
            return Err(Status::BadArgument.into());
        }
        state.effective_context = Some(id);
        Ok(())
    });
    host_fn!(linker, "env", "proxy_done", |c| {
        // Only a context whose `proxy_on_done` answered false is waiting for this.
        let state = c.data_mut();
        let id = state.current_context();
        if state.pending_done.remove(&id) {
            Ok(())
        } else {
            Err(Status::NotFound.into())
        }
    });
    host_fn!(
        linker,
        "env",
        "proxy_call_foreign_function",
        |c,
         name_ptr: i32,
         name_len: i32,
         args_ptr: i32,
         args_len: i32,
         _results_ptr: i32,
         _size_ptr: i32| {
            read(c, name_ptr, name_len)?;
            check(c, args_ptr, args_len as u32)?;
            Err(Status::NotFound.into())
        }
    );
    Ok(())
}
