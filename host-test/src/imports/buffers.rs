//! Buffers: `proxy_get_buffer_bytes`, `proxy_get_buffer_status`, `proxy_set_buffer_bytes`.
//!
//! Which buffer exists when follows Envoy: the VM configuration always; the plugin configuration
//! while the root context starts and configures; the http call response body only inside
//! `proxy_on_http_call_response`; bodies only in a stream context. Anything else is `NotFound`.

use wasmtime::{Caller, Linker};

use super::host_fn;
use crate::abi::{BufferType, Status};
use crate::error::HostResult;
use crate::memory::{read, return_bytes, write_u32};
use crate::state::VmState;

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    host_fn!(
        linker,
        "env",
        "proxy_get_buffer_bytes",
        |c, kind: i32, start: i32, max: i32, ptr_ptr: i32, size_ptr: i32| get_bytes(
            c, kind, start, max, ptr_ptr, size_ptr
        )
    );
    host_fn!(
        linker,
        "env",
        "proxy_get_buffer_status",
        |c, kind: i32, size_ptr: i32, flags_ptr: i32| {
            let kind = BufferType::from_raw(kind).ok_or(Status::BadArgument)?;
            let size = buffer(c.data(), kind).ok_or(Status::NotFound)?.len();
            write_u32(c, size_ptr, u32::try_from(size).unwrap_or(u32::MAX))?;
            write_u32(c, flags_ptr, 0)
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_set_buffer_bytes",
        |c, kind: i32, start: i32, size: i32, ptr: i32, len: i32| set_bytes(
            c,
            kind,
            start as u32,
            size as u32,
            ptr,
            len
        )
    );
    Ok(())
}

/// A copy of the buffer's current content, `None` when it does not exist in this context.
fn buffer(state: &VmState, kind: BufferType) -> Option<Vec<u8>> {
    match kind {
        BufferType::VmConfiguration => Some(state.config.vm_config.clone()),
        BufferType::PluginConfiguration => {
            state.plugin_config_readable.then(|| state.config.plugin_config.clone())
        }
        BufferType::HttpCallResponseBody => state.call_response.as_ref().map(|r| r.body.clone()),
        BufferType::HttpRequestBody => state.current_stream().map(|s| s.request_body.clone()),
        BufferType::HttpResponseBody => state.current_stream().map(|s| s.response_body.clone()),
        BufferType::DownstreamData
        | BufferType::UpstreamData
        | BufferType::GrpcReceiveBuffer
        | BufferType::CallData => None,
    }
}

fn get_bytes(
    c: &mut Caller<'_, VmState>,
    kind: i32,
    start: i32,
    max: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> HostResult {
    let kind = BufferType::from_raw(kind).ok_or(Status::BadArgument)?;
    let data = buffer(c.data(), kind).ok_or(Status::NotFound)?;
    let (start, max) = (start as u32 as usize, max as u32 as usize);
    // Envoy adds in 64 bits, so `max` may be anything (SDKs pass `usize::MAX` for "all"); a
    // start past the end is the spec's "buffer overflow" bad argument.
    if start > data.len() {
        return Err(Status::BadArgument.into());
    }
    let end = start.saturating_add(max).min(data.len());
    if end == start {
        // Envoy writes nothing at all then: the SDK sees its null pointer and reads `None`.
        return Ok(());
    }
    return_bytes(c, &data[start..end], ptr_ptr, size_ptr)
}

/// Envoy's `copyFrom`: (0, 0) prepends, (0, >= len) replaces, start >= len appends, anything else
/// is a bad argument. Only bodies are writable.
fn set_bytes(
    c: &mut Caller<'_, VmState>,
    kind: i32,
    start: u32,
    size: u32,
    ptr: i32,
    len: i32,
) -> HostResult {
    let kind = BufferType::from_raw(kind).ok_or(Status::BadArgument)?;
    let exists = buffer(c.data(), kind).is_some();
    if !exists {
        return Err(Status::NotFound.into());
    }
    let data = read(c, ptr, len)?;
    let stream = c.data_mut().current_stream_mut();
    let body = match (kind, stream) {
        (BufferType::HttpRequestBody, Some(s)) => &mut s.request_body,
        (BufferType::HttpResponseBody, Some(s)) => &mut s.response_body,
        _ => return Err(Status::BadArgument.into()),
    };
    let (start, size) = (start as usize, size as usize);
    if start == 0 && size == 0 {
        body.splice(0..0, data);
    } else if start == 0 && size >= body.len() {
        *body = data;
    } else if start >= body.len() {
        body.extend_from_slice(&data);
    } else {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}
