//! The WASI preview1 functions Envoy provides, implemented in-host and deterministically:
//! stdout/stderr become log lines (info/error, trailing newline dropped, as Envoy does), clocks
//! read the virtual clock, randomness is a seeded generator, there is no environment, no
//! arguments, no files, and `proc_exit` traps.
//!
//! Registered under `wasi_snapshot_preview1` and `wasi_unstable`, like Envoy. A bad guest
//! pointer is `FAULT` (21), never a trap.

use wasmtime::{Caller, Linker};

use super::host_fn;
use crate::abi::{errno, LogLevel};
use crate::error::{Fault, HostResult};
use crate::memory::{read, write, write_u32, write_u64};
use crate::state::VmState;

/// The most bytes one `random_get` hands out; more is `INVAL`, as the spec allows.
const MAX_RANDOM_BYTES: u32 = 64 * 1024;

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        register_in(linker, module)?;
    }
    Ok(())
}

/// Memory faults in WASI calls are `FAULT`, not the proxy status `InvalidMemoryAccess`.
fn wasi<T>(result: HostResult<T>) -> HostResult<T> {
    result.map_err(|fault| match fault {
        Fault::Code(_) => Fault::Code(errno::FAULT),
        trap => trap,
    })
}

fn register_in(linker: &mut Linker<VmState>, module: &'static str) -> wasmtime::Result<()> {
    host_fn!(
        linker,
        module,
        "fd_write",
        |c, fd: i32, iovs: i32, iovs_len: i32, written_ptr: i32| {
            fd_write(c, fd, iovs, iovs_len, written_ptr)
        }
    );
    host_fn!(linker, module, "fd_read", |_c, _fd: i32, _iovs: i32, _len: i32, _read_ptr: i32| {
        Err(Fault::Code(errno::NOSYS))
    });
    // Envoy answers success without doing anything for these two.
    host_fn!(linker, module, "fd_seek", |_c, _fd: i32, _offset: i64, _whence: i32, _ptr: i32| Ok(
        ()
    ));
    host_fn!(linker, module, "fd_close", |_c, _fd: i32| Ok(()));
    host_fn!(linker, module, "fd_fdstat_get", |c, fd: i32, stat_ptr: i32| {
        if fd != 1 && fd != 2 {
            return Err(Fault::Code(errno::BADF));
        }
        // filetype/flags 0, rights_base FD_WRITE (64), rights_inheriting 0: Envoy's answer.
        let mut stat = [0u8; 24];
        stat[8..16].copy_from_slice(&64u64.to_le_bytes());
        wasi(write(c, stat_ptr, &stat))
    });
    host_fn!(linker, module, "environ_get", |_c, _array: i32, _buf: i32| Ok(()));
    host_fn!(linker, module, "environ_sizes_get", |c, count_ptr: i32, size_ptr: i32| {
        wasi(write_u32(c, count_ptr, 0).and_then(|()| write_u32(c, size_ptr, 0)))
    });
    host_fn!(linker, module, "args_get", |_c, _argv: i32, _buf: i32| Ok(()));
    host_fn!(linker, module, "args_sizes_get", |c, argc_ptr: i32, size_ptr: i32| {
        wasi(write_u32(c, argc_ptr, 0).and_then(|()| write_u32(c, size_ptr, 0)))
    });
    host_fn!(linker, module, "clock_time_get", |c, id: i32, _precision: i64, time_ptr: i32| {
        let now = {
            let world = c.data().world()?;
            match id {
                0 => world.clock.realtime_ns(),
                1 => world.clock.monotonic_ns(),
                _ => return Err(Fault::Code(errno::NOTSUP)),
            }
        };
        wasi(write_u64(c, time_ptr, now))
    });
    host_fn!(linker, module, "random_get", |c, ptr: i32, len: i32| random_get(c, ptr, len as u32));
    linker.func_wrap(
        module,
        "proc_exit",
        |mut caller: Caller<'_, VmState>, code: i32| -> wasmtime::Result<()> {
            *caller.data_mut().hostcalls.entry("proc_exit").or_default() += 1;
            Err(wasmtime::Error::msg(format!("the guest called proc_exit({code})")))
        },
    )?;
    Ok(())
}

fn fd_write(
    c: &mut Caller<'_, VmState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    written_ptr: i32,
) -> HostResult {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Err(Fault::Code(errno::BADF)),
    };
    let mut text = Vec::new();
    for i in 0..iovs_len as u32 {
        let at = (iovs as u32).checked_add(i.saturating_mul(8)).ok_or(Fault::Code(errno::FAULT))?;
        let iovec = wasi(read(c, at as i32, 8))?;
        let buf = u32::from_le_bytes([iovec[0], iovec[1], iovec[2], iovec[3]]);
        let len = u32::from_le_bytes([iovec[4], iovec[5], iovec[6], iovec[7]]);
        if len > 0 {
            let chunk = wasi(read(c, buf as i32, len as i32))?;
            text.extend_from_slice(&chunk);
        }
    }
    let written = u32::try_from(text.len()).unwrap_or(u32::MAX);
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    if !text.is_empty() {
        c.data_mut().log(level, String::from_utf8_lossy(&text).into_owned());
    }
    wasi(write_u32(c, written_ptr, written))
}

fn random_get(c: &mut Caller<'_, VmState>, ptr: i32, len: u32) -> HostResult {
    if len > MAX_RANDOM_BYTES {
        return Err(Fault::Code(errno::INVAL));
    }
    wasi(crate::memory::check(c, ptr, len))?;
    let mut bytes = Vec::with_capacity(len as usize);
    while bytes.len() < len as usize {
        bytes.extend_from_slice(&c.data_mut().next_random().to_le_bytes());
    }
    bytes.truncate(len as usize);
    wasi(write(c, ptr, &bytes))
}
