//! The one place that talks to the proxy-wasm host.
//!
//! Every host call the filter makes goes through this adapter, which declares the ABI's imports,
//! turns the host's status into [`HostError`] and never panics: a panic kills the Envoy VM with
//! every request it serves. (The proxy-wasm SDK's wrappers `panic!` on statuses they do not
//! expect; the filter does not use the SDK at all, see `abi.rs`.)

use std::cell::RefCell;
use std::ptr::{null, null_mut};
use std::time::Duration;

use crate::types::{BufferType, LogLevel, MapType, MetricType, Status};

/// A host call that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The host answered with this non-Ok status.
    #[error("host returned status {0:?}")]
    Status(Status),
    /// The host answered with a status number the ABI does not define.
    #[error("host returned unknown status {0}")]
    Unknown(u32),
}

fn check(raw: u32) -> Result<(), HostError> {
    match raw {
        0 => Ok(()),
        1 => Err(HostError::Status(Status::NotFound)),
        2 => Err(HostError::Status(Status::BadArgument)),
        3 => Err(HostError::Status(Status::SerializationFailure)),
        4 => Err(HostError::Status(Status::ParseFailure)),
        6 => Err(HostError::Status(Status::InvalidMemoryAccess)),
        7 => Err(HostError::Status(Status::Empty)),
        8 => Err(HostError::Status(Status::CasMismatch)),
        10 => Err(HostError::Status(Status::InternalFailure)),
        12 => Err(HostError::Status(Status::Unimplemented)),
        other => Err(HostError::Unknown(other)),
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// Takes ownership of a buffer the host allocated in our memory through
/// `proxy_on_memory_allocate` ([`crate::abi::proxy_on_memory_allocate`]: a `Vec<u8>` of
/// exactly that capacity).
///
/// # Safety
/// `data` must be null or a pointer the host returned together with `size` for this call.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// Writes a log line; a failing log call is dropped, since there is nowhere else to report it.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the pointer and length describe a live &str for the whole call.
    unsafe {
        proxy_log(level as u32, message.as_ptr(), message.len());
    }
}

/// Milliseconds since the Unix epoch by the host's clock, 0 if the host will not say.
pub fn now_ms() -> u64 {
    let mut nanos: u64 = 0;
    // SAFETY: the return pointer is a live local.
    match check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) }) {
        Ok(()) => nanos / 1_000_000,
        Err(_) => 0,
    }
}

/// Asks the host to call `on_tick` every `period`.
pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: plain integer argument.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// Reads up to `max` bytes of a host buffer (plugin configuration, http call response body).
pub fn buffer(kind: BufferType, max: usize) -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: return pointers are live locals; on Ok the host hands us an allocation.
    unsafe {
        match check(proxy_get_buffer_bytes(kind as u32, 0, max, &mut data, &mut size)) {
            Ok(()) => Ok(take_host_buffer(data, size)),
            // Envoy answers NotFound/Empty for an absent or empty buffer: that is "no bytes".
            Err(HostError::Status(Status::NotFound | Status::Empty)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// One header's value as bytes (values need not be UTF-8), `None` when absent.
pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `buffer`.
    unsafe {
        match check(proxy_get_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        )) {
            Ok(()) => Ok(Some(take_host_buffer(data, size))),
            Err(HostError::Status(Status::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Sets header `name` to `value`, replacing every value it had (Envoy's `setCopy`): unlike an
/// add, no earlier value of the same name stays ahead of ours.
pub fn replace_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live slices for the whole call.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// A shared-data value with its CAS, `None` when the key is absent.
pub fn shared_get(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: as in `buffer`.
    unsafe {
        match check(proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas))
        {
            Ok(()) => Ok(Some((take_host_buffer(data, size), cas))),
            Err(HostError::Status(Status::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Writes shared data if its CAS still is `cas` (0: unconditionally).
pub fn shared_set(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live slices for the whole call.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Serialises a header map the way the ABI expects: count, (key len, value len) pairs, then
/// each key and value followed by a NUL.
fn serialize_headers(headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    serialize_headers_into(&mut out, headers);
    out
}

/// [`serialize_headers`] into `out`, replacing what it held.
fn serialize_headers_into(out: &mut Vec<u8>, headers: &[(&str, &[u8])]) {
    let size = 4 + headers.iter().map(|(k, v)| 10 + k.len() + v.len()).sum::<usize>();
    out.clear();
    out.reserve(size);
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (k, v) in headers {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
}

thread_local! {
    /// The serialised headers of local responses, kept between requests: a request costs no
    /// allocation for them once the buffer has grown to the largest answer (bounded: a
    /// `Location` holds at most an 8 KiB path).
    static RESPONSE_HEADERS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Answers the current request locally with `status`, `headers` and `body`.
pub fn send_response(status: u32, headers: &[(&str, &[u8])], body: &[u8]) -> Result<(), HostError> {
    RESPONSE_HEADERS.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut serialized) => {
            serialize_headers_into(&mut serialized, headers);
            send_serialized(status, &serialized, body)
        }
        // Not reached in a single-threaded VM without re-entry; a fresh buffer does as well.
        Err(_) => send_serialized(status, &serialize_headers(headers), body),
    })
}

fn send_serialized(status: u32, serialized: &[u8], body: &[u8]) -> Result<(), HostError> {
    let details = "vault_redirect";
    // SAFETY: every pointer and length describes a live buffer for the whole call.
    check(unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            if body.is_empty() { null() } else { body.as_ptr() },
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

/// Starts an HTTP call to `cluster` (no body, no trailers) and returns its token; the answer
/// arrives in `proxy_on_http_call_response` of the calling root context. Envoy refuses an
/// unknown cluster or bad headers with BadArgument and a call it cannot start with
/// InternalFailure.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &[u8])],
    timeout: Duration,
) -> Result<u32, HostError> {
    let serialized = serialize_headers(headers);
    let no_trailers = serialize_headers(&[]);
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut token: u32 = 0;
    // SAFETY: every pointer and length describes a live buffer or local for the whole call.
    check(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            serialized.as_ptr(),
            serialized.len(),
            null(),
            0,
            no_trailers.as_ptr(),
            no_trailers.len(),
            timeout_ms,
            &mut token,
        )
    })
    .map(|()| token)
}

/// Defines (or finds, if a sibling VM defined it) a metric and returns its id.
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, HostError> {
    let mut id: u32 = 0;
    // SAFETY: pointers describe a live &str and a live local.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })
        .map(|()| id)
}

/// Adds `offset` to a counter or gauge; failures are ignored (metrics never fail a request).
pub fn increment_metric(id: u32, offset: i64) {
    // SAFETY: plain integer arguments.
    unsafe {
        proxy_increment_metric(id, offset);
    }
}

/// Sets a gauge; failures are ignored.
pub fn record_metric(id: u32, value: u64) {
    // SAFETY: plain integer arguments.
    unsafe {
        proxy_record_metric(id, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_serialised_in_the_abi_layout() {
        let bytes = serialize_headers(&[("a", b"xy"), ("bc", b"")]);
        let mut expected = vec![2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(b"a\0xy\0bc\0\0");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn unknown_statuses_are_errors_not_panics() {
        assert_eq!(check(0), Ok(()));
        assert_eq!(check(8), Err(HostError::Status(Status::CasMismatch)));
        assert_eq!(check(12), Err(HostError::Status(Status::Unimplemented)));
        assert_eq!(check(13), Err(HostError::Unknown(13)));
    }
}
