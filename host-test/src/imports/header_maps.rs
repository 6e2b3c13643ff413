//! Header maps: `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//! `proxy_get_header_map_value`, `proxy_add/replace/remove_header_map_value`,
//! `proxy_get_header_map_size`.
//!
//! Envoy's rules, kept here: a map type above 7 is `BadArgument`; a map that does not exist in
//! the current context reads as empty through `get_header_map_pairs` but is `BadArgument` for the
//! single-value calls; only the four request/response maps of a stream are writable; names are
//! lower-cased on the way in.

use wasmtime::{Caller, Linker};

use super::host_fn;
use crate::abi::{MapType, Status};
use crate::error::HostResult;
use crate::memory::{read, return_bytes, write_u32};
use crate::pairs::{self, Pair};
use crate::state::VmState;

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    host_fn!(
        linker,
        "env",
        "proxy_get_header_map_pairs",
        |c, kind: i32, ptr_ptr: i32, size_ptr: i32| {
            let kind = map_type(kind)?;
            // Envoy hands an empty (or absent) map over as (0, 0), which the SDK reads as empty.
            let bytes = match readable(c.data(), kind) {
                Some(map) if !map.is_empty() => pairs::encode(map),
                _ => Vec::new(),
            };
            return_bytes(c, &bytes, ptr_ptr, size_ptr)
        }
    );
    host_fn!(linker, "env", "proxy_set_header_map_pairs", |c, kind: i32, ptr: i32, len: i32| {
        let kind = map_type(kind)?;
        let raw = read(c, ptr, len)?;
        let new_pairs = pairs::decode(&raw).map_err(|_| Status::BadArgument)?;
        let map = writable(c.data_mut(), kind).ok_or(Status::BadArgument)?;
        *map = new_pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        Ok(())
    });
    host_fn!(
        linker,
        "env",
        "proxy_get_header_map_value",
        |c, kind: i32, key_ptr: i32, key_len: i32, ptr_ptr: i32, size_ptr: i32| {
            let kind = map_type(kind)?;
            let key = read(c, key_ptr, key_len)?.to_ascii_lowercase();
            let map = readable(c.data(), kind).ok_or(Status::BadArgument)?;
            // Envoy answers the first value when a name repeats.
            let value = map.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
            let value = value.ok_or(Status::NotFound)?;
            return_bytes(c, &value, ptr_ptr, size_ptr)
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_add_header_map_value",
        |c, kind: i32, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32| {
            let (kind, key, value) = key_value(c, kind, key_ptr, key_len, value_ptr, value_len)?;
            writable(c.data_mut(), kind).ok_or(Status::BadArgument)?.push((key, value));
            Ok(())
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_replace_header_map_value",
        |c, kind: i32, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32| {
            let (kind, key, value) = key_value(c, kind, key_ptr, key_len, value_ptr, value_len)?;
            let map = writable(c.data_mut(), kind).ok_or(Status::BadArgument)?;
            replace(map, key, value);
            Ok(())
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_remove_header_map_value",
        |c, kind: i32, key_ptr: i32, key_len: i32| {
            let kind = map_type(kind)?;
            let key = read(c, key_ptr, key_len)?.to_ascii_lowercase();
            let map = writable(c.data_mut(), kind).ok_or(Status::BadArgument)?;
            map.retain(|(k, _)| *k != key);
            Ok(())
        }
    );
    host_fn!(linker, "env", "proxy_get_header_map_size", |c, kind: i32, size_ptr: i32| {
        let kind = map_type(kind)?;
        let map = writable(c.data_mut(), kind).ok_or(Status::BadArgument)?;
        // Envoy's `byteSize()`: the names' and values' lengths, nothing for the framing.
        let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
        write_u32(c, size_ptr, u32::try_from(size).unwrap_or(u32::MAX))
    });
    Ok(())
}

fn map_type(raw: i32) -> HostResult<MapType> {
    Ok(MapType::from_raw(raw).ok_or(Status::BadArgument)?)
}

fn key_value(
    c: &mut Caller<'_, VmState>,
    kind: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> HostResult<(MapType, Vec<u8>, Vec<u8>)> {
    let kind = map_type(kind)?;
    let key = read(c, key_ptr, key_len)?.to_ascii_lowercase();
    let value = read(c, value_ptr, value_len)?;
    Ok((kind, key, value))
}

/// Replaces the first value in place and drops any repeats of the name; adds it when absent.
fn replace(map: &mut Vec<Pair>, key: Vec<u8>, value: Vec<u8>) {
    match map.iter().position(|(k, _)| *k == key) {
        Some(first) => {
            map[first].1 = value;
            let mut index = 0;
            map.retain(|(k, _)| {
                let keep = index <= first || *k != key;
                index += 1;
                keep
            });
        }
        None => map.push((key, value)),
    }
}

/// The map as the current context may read it; `None` when it does not exist there.
fn readable(state: &VmState, kind: MapType) -> Option<&[Pair]> {
    match kind {
        MapType::HttpCallResponseHeaders => {
            state.call_response.as_ref().map(|r| r.headers.as_slice())
        }
        MapType::HttpCallResponseTrailers => {
            state.call_response.as_ref().map(|r| r.trailers.as_slice())
        }
        MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata => None,
        MapType::HttpRequestHeaders => state.current_stream().map(|s| s.request_headers.as_slice()),
        MapType::HttpRequestTrailers => {
            state.current_stream().map(|s| s.request_trailers.as_slice())
        }
        MapType::HttpResponseHeaders => {
            state.current_stream().map(|s| s.response_headers.as_slice())
        }
        MapType::HttpResponseTrailers => {
            state.current_stream().map(|s| s.response_trailers.as_slice())
        }
    }
}

/// The map as the current context may change it; `None` when it is absent or read-only.
fn writable(state: &mut VmState, kind: MapType) -> Option<&mut Vec<Pair>> {
    let stream = state.current_stream_mut()?;
    match kind {
        MapType::HttpRequestHeaders => Some(&mut stream.request_headers),
        MapType::HttpRequestTrailers => Some(&mut stream.request_trailers),
        MapType::HttpResponseHeaders => Some(&mut stream.response_headers),
        MapType::HttpResponseTrailers => Some(&mut stream.response_trailers),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, &str)]) -> Vec<Pair> {
        items.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn replace_keeps_the_first_position_and_drops_repeats() {
        let mut m = map(&[("a", "1"), ("b", "2"), ("a", "3")]);
        replace(&mut m, b"a".to_vec(), b"9".to_vec());
        assert_eq!(m, map(&[("a", "9"), ("b", "2")]));
    }

    #[test]
    fn replace_adds_a_missing_name() {
        let mut m = map(&[("a", "1")]);
        replace(&mut m, b"b".to_vec(), b"2".to_vec());
        assert_eq!(m, map(&[("a", "1"), ("b", "2")]));
    }
}
