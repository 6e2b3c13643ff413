//! Bounds-checked access to guest memory, and the one place a host call's outcome becomes either
//! a status for the guest or a trap.
//!
//! A bad pointer from the guest must become `InvalidMemoryAccess` (or WASI's `FAULT`), never a
//! host panic and never a trap: the guest caused it and the ABI says how to tell it.

use wasmtime::{Caller, Extern, Memory};

use crate::abi::Status;
use crate::error::{trap, Fault, HostResult};
use crate::state::VmState;

/// Runs a host call body, counts it, and turns its outcome into the i32 the guest receives.
pub(crate) fn hostcall(
    caller: &mut Caller<'_, VmState>,
    name: &'static str,
    body: impl FnOnce(&mut Caller<'_, VmState>) -> HostResult,
) -> wasmtime::Result<i32> {
    *caller.data_mut().hostcalls.entry(name).or_default() += 1;
    match body(caller) {
        Ok(()) => Ok(0),
        Err(Fault::Code(code)) => Ok(code),
        Err(Fault::Trap(error)) => Err(error.context(format!("in host call {name}"))),
    }
}

const OUT_OF_BOUNDS: Fault = Fault::Code(Status::InvalidMemoryAccess as i32);

fn memory(caller: &mut Caller<'_, VmState>) -> HostResult<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(trap("the module exports no memory named `memory`")),
    }
}

/// Guest pointers and sizes are wasm32 `i32`s holding unsigned values.
fn range(ptr: i32, len: u32) -> HostResult<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as usize).ok_or(OUT_OF_BOUNDS)?;
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> HostResult<Vec<u8>> {
    let memory = memory(caller)?;
    let range = range(ptr, len as u32)?;
    memory.data(&*caller).get(range).map(<[u8]>::to_vec).ok_or(OUT_OF_BOUNDS)
}

/// Writes `bytes` at `ptr` in guest memory.
pub(crate) fn write(caller: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> HostResult {
    let memory = memory(caller)?;
    let range = range(ptr, u32::try_from(bytes.len()).map_err(|_| OUT_OF_BOUNDS)?)?;
    memory.data_mut(&mut *caller).get_mut(range).ok_or(OUT_OF_BOUNDS)?.copy_from_slice(bytes);
    Ok(())
}

/// Fails with `InvalidMemoryAccess` unless `len` bytes at `ptr` are inside guest memory.
pub(crate) fn check(caller: &mut Caller<'_, VmState>, ptr: i32, len: u32) -> HostResult {
    let memory = memory(caller)?;
    let range = range(ptr, len)?;
    if range.end <= memory.data_size(&*caller) {
        Ok(())
    } else {
        Err(OUT_OF_BOUNDS)
    }
}

pub(crate) fn write_u32(caller: &mut Caller<'_, VmState>, ptr: i32, value: u32) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Caller<'_, VmState>, ptr: i32, value: u64) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates `size` bytes with the guest's allocator: `malloc` if exported, else
/// `proxy_on_memory_allocate` (Envoy's order).
pub(crate) fn alloc(caller: &mut Caller<'_, VmState>, size: u32) -> HostResult<i32> {
    let func = caller
        .get_export("malloc")
        .or_else(|| caller.get_export("proxy_on_memory_allocate"))
        .and_then(Extern::into_func)
        .ok_or_else(|| trap("the module exports neither malloc nor proxy_on_memory_allocate"))?;
    let typed = func.typed::<i32, i32>(&*caller).map_err(Fault::Trap)?;
    let ptr = typed.call(&mut *caller, size as i32).map_err(Fault::Trap)?;
    if ptr == 0 {
        return Err(OUT_OF_BOUNDS);
    }
    check(caller, ptr, size)?;
    Ok(ptr)
}

/// Copies `bytes` into fresh guest memory and writes its address and size to the guest's return
/// pointers, as Envoy's `copyToPointerSize` does: empty data is (0, 0) with nothing allocated.
/// The return pointers are checked first so a bad one leaks no guest memory.
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> HostResult {
    check(caller, ptr_ptr, 4)?;
    check(caller, size_ptr, 4)?;
    let size = u32::try_from(bytes.len()).map_err(|_| Fault::from(Status::InternalFailure))?;
    let ptr = if bytes.is_empty() {
        0
    } else {
        let ptr = alloc(caller, size)?;
        write(caller, ptr, bytes)?;
        ptr
    };
    write_u32(caller, ptr_ptr, ptr as u32)?;
    write_u32(caller, size_ptr, size)
}
