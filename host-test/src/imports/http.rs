//! Outgoing calls and stream control: `proxy_http_call`, `proxy_send_local_response`,
//! `proxy_continue_stream`, `proxy_close_stream`, `proxy_get_status`, and the gRPC calls.
//!
//! http calls are only recorded here; the embedder answers them (or lets them time out on the
//! virtual clock). gRPC is not simulated: `proxy_grpc_call`/`proxy_grpc_stream` answer
//! `InternalFailure` ("the host failed to send the call", which the SDK maps to an `Err` instead
//! of panicking), and the calls taking a token answer `NotFound`, since no token ever exists.

use std::time::Duration;

use wasmtime::Linker;

use super::host_fn;
use crate::abi::Status;
use crate::error::HostResult;
use crate::memory::{check, read, return_bytes, write_u32};
use crate::pairs;
use crate::state::{PendingCall, VmState};
use crate::LocalResponse;

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    host_fn!(
        linker,
        "env",
        "proxy_http_call",
        |c,
         up_ptr: i32,
         up_len: i32,
         h_ptr: i32,
         h_len: i32,
         b_ptr: i32,
         b_len: i32,
         t_ptr: i32,
         t_len: i32,
         timeout: i32,
         token_ptr: i32| {
            let upstream = read(c, up_ptr, up_len)?;
            let headers = read(c, h_ptr, h_len)?;
            let body = read(c, b_ptr, b_len)?;
            let trailers = read(c, t_ptr, t_len)?;
            // Envoy writes the token slot before dispatching, so a bad pointer dispatches nothing.
            check(c, token_ptr, 4)?;
            let token = http_call(c.data_mut(), upstream, &headers, body, &trailers, timeout)?;
            write_u32(c, token_ptr, token)
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_send_local_response",
        |c,
         status: i32,
         d_ptr: i32,
         d_len: i32,
         b_ptr: i32,
         b_len: i32,
         h_ptr: i32,
         h_len: i32,
         grpc: i32| {
            let details = read(c, d_ptr, d_len)?;
            let body = read(c, b_ptr, b_len)?;
            let headers = read(c, h_ptr, h_len)?;
            let headers = pairs::decode(&headers).map_err(|_| Status::BadArgument)?;
            let response = LocalResponse {
                status: status as u32,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v))
                    .collect(),
                body,
                details: String::from_utf8_lossy(&details).into_owned(),
                grpc_status: (grpc >= 0).then_some(grpc),
            };
            // Outside a stream Envoy has no request to answer and silently does nothing.
            if let Some(stream) = c.data_mut().current_stream_mut() {
                stream.local_response = Some(response);
            }
            Ok(())
        }
    );
    host_fn!(linker, "env", "proxy_continue_stream", |c, kind: i32| {
        stream_kind(kind)?;
        if let Some(stream) = c.data_mut().current_stream_mut() {
            stream.continued = true;
        }
        Ok(())
    });
    host_fn!(linker, "env", "proxy_close_stream", |c, kind: i32| {
        stream_kind(kind)?;
        if let Some(stream) = c.data_mut().current_stream_mut() {
            stream.closed = true;
        }
        Ok(())
    });
    host_fn!(linker, "env", "proxy_get_status", |c, code_ptr: i32, ptr_ptr: i32, size_ptr: i32| {
        let (code, message) = c.data().status.clone();
        check(c, code_ptr, 4)?;
        return_bytes(c, &message, ptr_ptr, size_ptr)?;
        write_u32(c, code_ptr, code)
    });
    host_fn!(
        linker,
        "env",
        "proxy_grpc_call",
        |c,
         up_ptr: i32,
         up_len: i32,
         s_ptr: i32,
         s_len: i32,
         m_ptr: i32,
         m_len: i32,
         md_ptr: i32,
         md_len: i32,
         msg_ptr: i32,
         msg_len: i32,
         _timeout: i32,
         token_ptr: i32| {
            for (ptr, len) in [
                (up_ptr, up_len),
                (s_ptr, s_len),
                (m_ptr, m_len),
                (md_ptr, md_len),
                (msg_ptr, msg_len),
            ] {
                check(c, ptr, len as u32)?;
            }
            check(c, token_ptr, 4)?;
            Err(Status::InternalFailure.into())
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_grpc_stream",
        |c,
         up_ptr: i32,
         up_len: i32,
         s_ptr: i32,
         s_len: i32,
         m_ptr: i32,
         m_len: i32,
         md_ptr: i32,
         md_len: i32,
         token_ptr: i32| {
            for (ptr, len) in [(up_ptr, up_len), (s_ptr, s_len), (m_ptr, m_len), (md_ptr, md_len)] {
                check(c, ptr, len as u32)?;
            }
            check(c, token_ptr, 4)?;
            Err(Status::InternalFailure.into())
        }
    );
    host_fn!(linker, "env", "proxy_grpc_send", |c, _token: i32, ptr: i32, len: i32, _end: i32| {
        check(c, ptr, len as u32)?;
        Err(Status::NotFound.into())
    });
    host_fn!(linker, "env", "proxy_grpc_cancel", |_c, _token: i32| Err(Status::NotFound.into()));
    host_fn!(linker, "env", "proxy_grpc_close", |_c, _token: i32| Err(Status::NotFound.into()));
    Ok(())
}

/// `proxy_stream_type_t`: 0 request, 1 response are HTTP streams; 2 and 3 (TCP) are not, and
/// Envoy's HTTP filter answers `BadArgument` for them, as for anything above 3.
fn stream_kind(raw: i32) -> HostResult {
    match raw {
        0 | 1 => Ok(()),
        _ => Err(Status::BadArgument.into()),
    }
}

/// Envoy's checks, in Envoy's order: negative timeout, unknown cluster, missing `:path`,
/// `:method` or `:authority`. Tokens count from 1 per VM.
fn http_call(
    state: &mut VmState,
    upstream: Vec<u8>,
    headers: &[u8],
    body: Vec<u8>,
    trailers: &[u8],
    timeout: i32,
) -> HostResult<u32> {
    if timeout < 0 {
        return Err(Status::BadArgument.into());
    }
    let upstream = String::from_utf8(upstream).map_err(|_| Status::BadArgument)?;
    if let Some(known) = &state.config.known_clusters {
        if !known.contains(&upstream) {
            return Err(Status::BadArgument.into());
        }
    }
    let headers: Vec<_> = pairs::decode(headers)
        .map_err(|_| Status::BadArgument)?
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let trailers = pairs::decode(trailers).map_err(|_| Status::BadArgument)?;
    for required in [&b":path"[..], b":method", b":authority"] {
        if !headers.iter().any(|(k, _)| k == required) {
            return Err(Status::BadArgument.into());
        }
    }
    let timeout_ms = timeout as u32;
    let now = state.world()?.clock.elapsed;
    let token = state.next_http_token;
    state.next_http_token = state.next_http_token.wrapping_add(1).max(1);
    state.http_calls.insert(
        token,
        PendingCall {
            token,
            upstream,
            headers,
            body,
            trailers,
            timeout_ms,
            deadline: (timeout_ms > 0).then(|| now + Duration::from_millis(u64::from(timeout_ms))),
        },
    );
    Ok(token)
}
