//! The host functions the guest imports, one module per group, each with its `register`.
//!
//! The host registers exactly what Envoy registers for an ABI 0.2.1 module (proxy-wasm-cpp-host's
//! `WasmBase::registerCallbacks`), no more: a filter that links here links in Envoy, and a filter
//! importing something Envoy lacks fails here as it would fail there.

use wasmtime::Linker;

use crate::state::VmState;

mod buffers;
mod header_maps;
mod http;
mod log_time;
mod metrics;
mod misc;
mod properties;
mod shared;
mod wasi;

/// Registers one host function: the body gets `&mut Caller` as `$c` and returns `HostResult`.
macro_rules! host_fn {
    ($linker:expr, $module:expr, $name:literal, |$c:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {
        $linker.func_wrap(
            $module,
            $name,
            |mut caller: wasmtime::Caller<'_, crate::state::VmState> $(, $arg: $ty)*| -> wasmtime::Result<i32> {
                crate::memory::hostcall(&mut caller, $name, |$c| $body)
            },
        )?
    };
}
pub(crate) use host_fn;

/// Adds every import this host provides to `linker`.
pub(crate) fn register_all(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    log_time::register(linker)?;
    buffers::register(linker)?;
    header_maps::register(linker)?;
    shared::register(linker)?;
    http::register(linker)?;
    metrics::register(linker)?;
    properties::register(linker)?;
    misc::register(linker)?;
    wasi::register(linker)?;
    Ok(())
}

/// What Envoy provides to an ABI 0.2.1 module, as (module, name). WASI functions are provided
/// under both `wasi_snapshot_preview1` and `wasi_unstable`.
pub const ENVOY_IMPORTS: &[(&str, &str)] = &[
    ("env", "proxy_log"),
    ("env", "proxy_get_log_level"),
    ("env", "proxy_get_status"),
    ("env", "proxy_set_property"),
    ("env", "proxy_get_property"),
    ("env", "proxy_send_local_response"),
    ("env", "proxy_get_shared_data"),
    ("env", "proxy_set_shared_data"),
    ("env", "proxy_register_shared_queue"),
    ("env", "proxy_resolve_shared_queue"),
    ("env", "proxy_dequeue_shared_queue"),
    ("env", "proxy_enqueue_shared_queue"),
    ("env", "proxy_get_header_map_value"),
    ("env", "proxy_add_header_map_value"),
    ("env", "proxy_replace_header_map_value"),
    ("env", "proxy_remove_header_map_value"),
    ("env", "proxy_get_header_map_pairs"),
    ("env", "proxy_set_header_map_pairs"),
    ("env", "proxy_get_header_map_size"),
    ("env", "proxy_get_buffer_status"),
    ("env", "proxy_get_buffer_bytes"),
    ("env", "proxy_set_buffer_bytes"),
    ("env", "proxy_http_call"),
    ("env", "proxy_grpc_call"),
    ("env", "proxy_grpc_stream"),
    ("env", "proxy_grpc_close"),
    ("env", "proxy_grpc_cancel"),
    ("env", "proxy_grpc_send"),
    ("env", "proxy_set_tick_period_milliseconds"),
    ("env", "proxy_get_current_time_nanoseconds"),
    ("env", "proxy_define_metric"),
    ("env", "proxy_increment_metric"),
    ("env", "proxy_record_metric"),
    ("env", "proxy_get_metric"),
    ("env", "proxy_set_effective_context"),
    ("env", "proxy_done"),
    ("env", "proxy_call_foreign_function"),
    ("env", "proxy_continue_stream"),
    ("env", "proxy_close_stream"),
    ("wasi_snapshot_preview1", "fd_write"),
    ("wasi_snapshot_preview1", "fd_read"),
    ("wasi_snapshot_preview1", "fd_seek"),
    ("wasi_snapshot_preview1", "fd_close"),
    ("wasi_snapshot_preview1", "fd_fdstat_get"),
    ("wasi_snapshot_preview1", "environ_get"),
    ("wasi_snapshot_preview1", "environ_sizes_get"),
    ("wasi_snapshot_preview1", "args_get"),
    ("wasi_snapshot_preview1", "args_sizes_get"),
    ("wasi_snapshot_preview1", "clock_time_get"),
    ("wasi_snapshot_preview1", "random_get"),
    ("wasi_snapshot_preview1", "proc_exit"),
    ("wasi_unstable", "fd_write"),
    ("wasi_unstable", "fd_read"),
    ("wasi_unstable", "fd_seek"),
    ("wasi_unstable", "fd_close"),
    ("wasi_unstable", "fd_fdstat_get"),
    ("wasi_unstable", "environ_get"),
    ("wasi_unstable", "environ_sizes_get"),
    ("wasi_unstable", "args_get"),
    ("wasi_unstable", "args_sizes_get"),
    ("wasi_unstable", "clock_time_get"),
    ("wasi_unstable", "random_get"),
    ("wasi_unstable", "proc_exit"),
];
