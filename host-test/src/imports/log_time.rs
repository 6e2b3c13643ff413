//! Logging, the virtual clock and the tick timer: `proxy_log`, `proxy_get_log_level`,
//! `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds`.
//!
//! Time only ever comes from the host's virtual clock, never from the machine's.

use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::host_fn;
use crate::abi::{LogLevel, Status};
use crate::error::HostResult;
use crate::memory::{read, write_u32, write_u64};
use crate::state::VmState;

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    host_fn!(linker, "env", "proxy_log", |c, level: i32, ptr: i32, len: i32| log(
        c, level, ptr, len
    ));
    host_fn!(linker, "env", "proxy_get_log_level", |c, ptr: i32| {
        let level = c.data().config.log_level as u32;
        write_u32(c, ptr, level)
    });
    host_fn!(linker, "env", "proxy_get_current_time_nanoseconds", |c, ptr: i32| {
        let now = c.data().world()?.clock.realtime_ns();
        write_u64(c, ptr, now)
    });
    host_fn!(linker, "env", "proxy_set_tick_period_milliseconds", |c, period: i32| {
        set_tick_period(c, period as u32)
    });
    Ok(())
}

fn log(c: &mut Caller<'_, VmState>, level: i32, ptr: i32, len: i32) -> HostResult {
    let level = LogLevel::from_raw(level).ok_or(Status::BadArgument)?;
    let message = read(c, ptr, len)?;
    c.data_mut().log(level, String::from_utf8_lossy(&message).into_owned());
    Ok(())
}

/// Like Envoy's timer: the first tick comes one period after it is set; 0 disables it.
fn set_tick_period(c: &mut Caller<'_, VmState>, period_ms: u32) -> HostResult {
    let now = c.data().world()?.clock.elapsed;
    let state = c.data_mut();
    state.tick_period_ms = period_ms;
    state.next_tick_at = (period_ms > 0).then(|| now + Duration::from_millis(u64::from(period_ms)));
    Ok(())
}
