//! Properties: `proxy_get_property`, `proxy_set_property`.
//!
//! A path is its segments joined by NUL. The host answers, in order: a value the embedder set with
//! [`crate::Host::with_property`]; a value the guest set on this stream; Envoy-like defaults
//! (`plugin_name`, `plugin_root_id`, `plugin_vm_id`, `node.id`, `node.cluster`,
//! `listener_direction`, and in a stream `request.*`, `source.*`, `destination.*`); otherwise
//! `NotFound`, as Envoy answers for anything it does not know.

use wasmtime::Linker;

use super::host_fn;
use crate::abi::Status;
use crate::memory::{read, return_bytes};
use crate::state::VmState;

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    host_fn!(
        linker,
        "env",
        "proxy_get_property",
        |c, path_ptr: i32, path_len: i32, ptr_ptr: i32, size_ptr: i32| {
            let path = read(c, path_ptr, path_len)?;
            let value = lookup(c.data(), &path).ok_or(Status::NotFound)?;
            return_bytes(c, &value, ptr_ptr, size_ptr)
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_set_property",
        |c, path_ptr: i32, path_len: i32, value_ptr: i32, value_len: i32| {
            let path = read(c, path_ptr, path_len)?;
            let value = read(c, value_ptr, value_len)?;
            // Envoy keeps these in the stream's filter state; outside a stream there is none.
            let stream = c.data_mut().current_stream_mut().ok_or(Status::NotFound)?;
            stream.filter_state.insert(path, value);
            Ok(())
        }
    );
    Ok(())
}

fn lookup(state: &VmState, path: &[u8]) -> Option<Vec<u8>> {
    if let Some(value) = state.config.properties.get(path) {
        return Some(value.clone());
    }
    if let Some(value) = state.current_stream().and_then(|s| s.filter_state.get(path)) {
        return Some(value.clone());
    }
    let segments: Vec<&[u8]> = path.split(|b| *b == 0).collect();
    let text = |s: &str| Some(s.as_bytes().to_vec());
    match segments.as_slice() {
        [b"plugin_name"] => text(&state.config.plugin_name),
        [b"plugin_root_id"] => text(&state.config.root_id),
        [b"plugin_vm_id"] => text(&state.config.vm_id),
        [b"node", b"id"] => text("host-test"),
        [b"node", b"cluster"] => text("host-test"),
        // Envoy's `TrafficDirection::UNSPECIFIED`, as an int64.
        [b"listener_direction"] => Some(0i64.to_le_bytes().to_vec()),
        [b"request", rest @ ..] => request_property(state, rest),
        [b"source", b"address"] if state.current_stream().is_some() => text("127.0.0.1:50000"),
        [b"source", b"port"] if state.current_stream().is_some() => {
            Some(50000i64.to_le_bytes().to_vec())
        }
        [b"destination", b"address"] if state.current_stream().is_some() => text("127.0.0.1:10000"),
        [b"destination", b"port"] if state.current_stream().is_some() => {
            Some(10000i64.to_le_bytes().to_vec())
        }
        _ => None,
    }
}

/// `request.*` from the current stream's request headers, as Envoy's `RequestWrapper` builds it.
fn request_property(state: &VmState, rest: &[&[u8]]) -> Option<Vec<u8>> {
    let stream = state.current_stream()?;
    let header = |name: &[u8]| {
        stream.request_headers.iter().find(|(k, _)| k.as_slice() == name).map(|(_, v)| v.clone())
    };
    match rest {
        [b"path"] => header(b":path"),
        [b"url_path"] => {
            header(b":path").map(|p| p.split(|b| *b == b'?').next().unwrap_or_default().to_vec())
        }
        [b"query"] => header(b":path").map(|p| match p.iter().position(|b| *b == b'?') {
            Some(q) => p[q + 1..].to_vec(),
            None => Vec::new(),
        }),
        [b"host"] => header(b":authority"),
        [b"scheme"] => header(b":scheme"),
        [b"method"] => header(b":method"),
        [b"id"] => header(b"x-request-id"),
        [b"useragent"] => header(b"user-agent"),
        [b"referer"] => header(b"referer"),
        [b"protocol"] => Some(b"HTTP/1.1".to_vec()),
        [b"headers", name] => header(&name.to_ascii_lowercase()),
        _ => None,
    }
}
