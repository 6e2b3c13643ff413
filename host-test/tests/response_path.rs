//! The response path: a request the filter lets upstream, given the upstream's answer, goes
//! through `proxy_on_response_headers`, `_body` and `_trailers`, and the outcome carries the
//! response as the filter left it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use host_test::{Action, Host, Request, UpstreamResponse};

/// Continues every request; on the response it adds `x-headers: <count>` and records what each
/// callback was given (at 60: end of stream of the headers; 64/68: body size and end of stream;
/// 72: trailer count).
const RESPONDER: &str = r#"
(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-headers")
  (global $bump (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $bump local.set $p
    global.get $bump local.get $n i32.add global.set $bump
    local.get $p)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 0)
  (func (export "proxy_on_response_headers") (param i32) (param $n i32) (param $eos i32) (result i32)
    (i32.store8 (i32.const 48) (i32.add (i32.const 48) (local.get $n)))
    (i32.store (i32.const 60) (local.get $eos))
    (drop (call $add (i32.const 2) (i32.const 16) (i32.const 9) (i32.const 48) (i32.const 1)))
    i32.const 0)
  (func (export "proxy_on_response_body") (param i32) (param $len i32) (param $eos i32) (result i32)
    (i32.store (i32.const 64) (local.get $len))
    (i32.store (i32.const 68) (local.get $eos))
    i32.const 0)
  (func (export "proxy_on_response_trailers") (param i32) (param $n i32) (result i32)
    (i32.store (i32.const 72) (local.get $n))
    i32.const 0)
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"#;

fn word(vm: &mut host_test::Vm, at: u32) -> u32 {
    u32::from_le_bytes(vm.read_guest_memory(at, 4).unwrap().try_into().unwrap())
}

#[test]
fn a_request_let_through_gets_the_upstream_response_through_the_response_callbacks() {
    let host = Host::from_bytes(RESPONDER.as_bytes()).unwrap();
    let mut vm = host.start_vm().unwrap();
    let response = UpstreamResponse::new(200)
        .with_header("Content-Type", "text/plain")
        .with_body("hello")
        .with_trailer("grpc-status", "0");
    let outcome = vm
        .send_with_response(Request::new(&[(":method", "GET"), (":path", "/x")]), response)
        .unwrap();
    assert_eq!(outcome.action, Action::Continue);
    assert!(outcome.local_response.is_none());
    let headers: Vec<(&str, &[u8])> =
        outcome.response_headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    // Names lower-cased, `:status` first, the filter's header added after the upstream's two.
    assert_eq!(
        headers,
        vec![(":status", &b"200"[..]), ("content-type", b"text/plain"), ("x-headers", b"2")]
    );
    assert_eq!(outcome.response_body, b"hello");
    assert_eq!(word(&mut vm, 60), 0, "headers are not the end of a stream with a body");
    assert_eq!((word(&mut vm, 64), word(&mut vm, 68)), (5, 0), "body size, and trailers follow");
    assert_eq!(word(&mut vm, 72), 1);
}

#[test]
fn a_body_less_response_ends_the_stream_with_its_headers_and_send_alone_runs_no_response_callback()
{
    let host = Host::from_bytes(RESPONDER.as_bytes()).unwrap();
    let mut vm = host.start_vm().unwrap();
    let outcome = vm
        .send_with_response(
            Request::new(&[(":method", "HEAD"), (":path", "/x")]),
            UpstreamResponse::new(204),
        )
        .unwrap();
    assert_eq!(word(&mut vm, 60), 1);
    assert_eq!(word(&mut vm, 64), 0, "no body callback without a body");
    assert_eq!(outcome.response_headers.len(), 2);

    let plain = vm.send(Request::new(&[(":method", "GET"), (":path", "/y")])).unwrap();
    assert!(plain.response_headers.is_empty() && plain.response_body.is_empty());
}
