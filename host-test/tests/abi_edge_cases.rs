//! The host at the ABI level, driven by a hand-written probe module: bad pointers, buffer bounds,
//! unknown map types, shared data CAS, http call bookkeeping, traps, WASI.
// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{encode_map, probe_host, read_u32, slot};
use host_test::{Action, HostError, HttpCallResponse, LogLevel, Metric, Vm};

const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const INVALID_MEMORY_ACCESS: i32 = 6;
const EMPTY: i32 = 7;
const CAS_MISMATCH: i32 = 8;
const INTERNAL_FAILURE: i32 = 10;
const WASI_FAULT: i32 = 21;
const WASI_BADF: i32 = 8;

/// Past the probe's single 64 KiB page.
const OUT_OF_BOUNDS: i32 = 0x10000;

fn call(vm: &mut Vm, name: &str, args: &[i32]) -> i32 {
    call_in(vm, None, name, args)
}

fn call_in(vm: &mut Vm, context: Option<u32>, name: &str, args: &[i32]) -> i32 {
    vm.call_export(context, &format!("call_{name}"), args).expect("no trap")[0]
}

/// Writes `bytes` at `at` and returns (ptr, len) as the ABI passes them.
fn put(vm: &mut Vm, at: u32, bytes: &[u8]) -> (i32, i32) {
    assert!(vm.write_guest_memory(at, bytes));
    (at as i32, bytes.len() as i32)
}

/// The bytes the host returned through the (ptr, size) pair at `slot::OUT`.
fn returned(vm: &mut Vm) -> Vec<u8> {
    let ptr = read_u32(vm, slot::OUT);
    let len = read_u32(vm, slot::OUT + 4);
    vm.read_guest_memory(ptr, len).expect("returned bytes are in bounds")
}

const OUT: i32 = slot::OUT as i32;
const OUT_SIZE: i32 = slot::OUT as i32 + 4;
const OUT_CAS: i32 = slot::OUT as i32 + 8;

#[test]
fn a_log_message_is_captured_with_its_level() {
    let mut vm = probe_host().start_vm().unwrap();
    let (ptr, len) = put(&mut vm, slot::SCRATCH, b"#1 hello");
    assert_eq!(call(&mut vm, "proxy_log", &[3, ptr, len]), OK);
    assert_eq!(vm.logs(), vec![(LogLevel::Warn, "#1 hello".to_owned())]);
}

#[test]
fn a_log_message_past_the_end_of_memory_is_an_invalid_memory_access_not_a_trap() {
    let mut vm = probe_host().start_vm().unwrap();
    assert_eq!(call(&mut vm, "proxy_log", &[2, OUT_OF_BOUNDS - 2, 4]), INVALID_MEMORY_ACCESS);
    assert_eq!(call(&mut vm, "proxy_log", &[2, -1, 2]), INVALID_MEMORY_ACCESS);
    assert!(vm.failed().is_none());
    assert!(vm.logs().is_empty());
}

#[test]
fn an_unknown_log_level_is_a_bad_argument() {
    let mut vm = probe_host().start_vm().unwrap();
    let (ptr, len) = put(&mut vm, slot::SCRATCH, b"x");
    assert_eq!(call(&mut vm, "proxy_log", &[6, ptr, len]), BAD_ARGUMENT);
}

#[test]
fn the_host_log_level_filters_and_is_reported_to_the_guest() {
    let mut vm = probe_host().with_log_level(LogLevel::Info).start_vm().unwrap();
    let (ptr, len) = put(&mut vm, slot::SCRATCH, b"debug line");
    assert_eq!(call(&mut vm, "proxy_log", &[1, ptr, len]), OK);
    assert!(vm.logs().is_empty());
    assert_eq!(call(&mut vm, "proxy_get_log_level", &[OUT]), OK);
    assert_eq!(read_u32(&mut vm, slot::OUT), 2);
}

#[test]
fn an_unknown_map_type_is_a_bad_argument_for_every_map_call() {
    let mut vm = probe_host().start_vm().unwrap();
    let (k, kl) = put(&mut vm, slot::SCRATCH, b":path");
    assert_eq!(call(&mut vm, "proxy_get_header_map_pairs", &[8, OUT, OUT_SIZE]), BAD_ARGUMENT);
    assert_eq!(
        call(&mut vm, "proxy_get_header_map_value", &[8, k, kl, OUT, OUT_SIZE]),
        BAD_ARGUMENT
    );
    assert_eq!(call(&mut vm, "proxy_add_header_map_value", &[99, k, kl, k, kl]), BAD_ARGUMENT);
    assert_eq!(call(&mut vm, "proxy_remove_header_map_value", &[-1, k, kl]), BAD_ARGUMENT);
    assert_eq!(call(&mut vm, "proxy_get_header_map_size", &[8, OUT]), BAD_ARGUMENT);
}

#[test]
fn request_headers_read_as_empty_in_the_root_context_but_a_single_value_is_a_bad_argument() {
    let mut vm = probe_host().start_vm().unwrap();
    let (k, kl) = put(&mut vm, slot::SCRATCH, b":path");
    assert_eq!(call(&mut vm, "proxy_get_header_map_pairs", &[0, OUT, OUT_SIZE]), OK);
    assert_eq!((read_u32(&mut vm, slot::OUT), read_u32(&mut vm, slot::OUT + 4)), (0, 0));
    assert_eq!(
        call(&mut vm, "proxy_get_header_map_value", &[0, k, kl, OUT, OUT_SIZE]),
        BAD_ARGUMENT
    );
    assert_eq!(call(&mut vm, "proxy_add_header_map_value", &[0, k, kl, k, kl]), BAD_ARGUMENT);
}

#[test]
fn a_paused_request_exposes_its_headers_lower_cased_and_takes_changes() {
    let mut vm = probe_host().start_vm().unwrap();
    let outcome = vm.send_request(&[(":path", "/v1/x"), ("X-Token", "secret")]).unwrap();
    assert_eq!(outcome.action, Action::Pause);
    assert!(outcome.open);
    let ctx = Some(outcome.context_id);
    let (k, kl) = put(&mut vm, slot::SCRATCH, b"x-token");
    assert_eq!(call_in(&mut vm, ctx, "proxy_get_header_map_value", &[0, k, kl, OUT, OUT_SIZE]), OK);
    assert_eq!(returned(&mut vm), b"secret");
    let (k2, kl2) = put(&mut vm, slot::SCRATCH + 64, b"X-Added");
    let (v2, vl2) = put(&mut vm, slot::SCRATCH + 128, b"1");
    assert_eq!(call_in(&mut vm, ctx, "proxy_add_header_map_value", &[0, k2, kl2, v2, vl2]), OK);
    assert_eq!(call_in(&mut vm, ctx, "proxy_remove_header_map_value", &[0, k, kl]), OK);
    let finished = vm.finish_request(outcome.context_id).unwrap();
    assert_eq!(
        finished.request_headers,
        vec![(":path".to_owned(), b"/v1/x".to_vec()), ("x-added".to_owned(), b"1".to_vec())]
    );
}

#[test]
fn a_missing_header_is_not_found_and_a_malformed_map_is_a_bad_argument() {
    let mut vm = probe_host().start_vm().unwrap();
    let ctx = Some(vm.send_request(&[(":path", "/")]).unwrap().context_id);
    let (k, kl) = put(&mut vm, slot::SCRATCH, b"absent");
    assert_eq!(
        call_in(&mut vm, ctx, "proxy_get_header_map_value", &[0, k, kl, OUT, OUT_SIZE]),
        NOT_FOUND
    );
    // Claims one pair of 200-byte key but carries 3 bytes.
    let (m, ml) =
        put(&mut vm, slot::SCRATCH + 64, &[1, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, b'a', 0, 0]);
    assert_eq!(call_in(&mut vm, ctx, "proxy_set_header_map_pairs", &[0, m, ml]), BAD_ARGUMENT);
}

#[test]
fn a_return_pointer_outside_memory_is_an_invalid_memory_access_and_allocates_nothing() {
    let mut vm = probe_host().with_vm_config("vm-config").start_vm().unwrap();
    let bump_before = vm.call_export(None, "bump", &[]).unwrap();
    assert_eq!(
        call(&mut vm, "proxy_get_buffer_bytes", &[6, 0, 100, OUT_OF_BOUNDS, OUT_SIZE]),
        INVALID_MEMORY_ACCESS
    );
    assert_eq!(vm.call_export(None, "bump", &[]).unwrap(), bump_before);
}

#[test]
fn buffers_honour_offsets_and_a_start_past_the_end_is_a_bad_argument() {
    let mut vm = probe_host().with_vm_config("0123456789").start_vm().unwrap();
    assert_eq!(call(&mut vm, "proxy_get_buffer_bytes", &[6, 2, 3, OUT, OUT_SIZE]), OK);
    assert_eq!(returned(&mut vm), b"234");
    // "All of it" as SDKs ask for it: max = usize::MAX.
    assert_eq!(call(&mut vm, "proxy_get_buffer_bytes", &[6, 8, -1, OUT, OUT_SIZE]), OK);
    assert_eq!(returned(&mut vm), b"89");
    assert_eq!(call(&mut vm, "proxy_get_buffer_bytes", &[6, 11, 1, OUT, OUT_SIZE]), BAD_ARGUMENT);
    assert_eq!(call(&mut vm, "proxy_get_buffer_bytes", &[9, 0, 1, OUT, OUT_SIZE]), BAD_ARGUMENT);
    assert_eq!(call(&mut vm, "proxy_get_buffer_status", &[6, OUT, OUT_SIZE]), OK);
    assert_eq!(read_u32(&mut vm, slot::OUT), 10);
}

#[test]
fn the_plugin_configuration_is_only_readable_while_configuring() {
    let mut vm = probe_host().with_plugin_config("{}").start_vm().unwrap();
    assert_eq!(call(&mut vm, "proxy_get_buffer_bytes", &[7, 0, 100, OUT, OUT_SIZE]), NOT_FOUND);
    assert_eq!(call(&mut vm, "proxy_get_buffer_bytes", &[4, 0, 100, OUT, OUT_SIZE]), NOT_FOUND);
}

#[test]
fn configuration_buffers_cannot_be_written() {
    let mut vm = probe_host().with_vm_config("abc").start_vm().unwrap();
    let (p, l) = put(&mut vm, slot::SCRATCH, b"x");
    assert_eq!(call(&mut vm, "proxy_set_buffer_bytes", &[6, 0, 0, p, l]), BAD_ARGUMENT);
    assert_eq!(call(&mut vm, "proxy_set_buffer_bytes", &[2, 0, 0, p, l]), NOT_FOUND);
}

#[test]
fn shared_data_gives_a_new_cas_per_write_and_refuses_a_stale_one_across_vms() {
    let host = probe_host();
    let mut a = host.start_vm().unwrap();
    let mut b = host.start_vm().unwrap();
    let (k, kl) = put(&mut a, slot::SCRATCH, b"state");
    put(&mut b, slot::SCRATCH, b"state");
    let (v, vl) = put(&mut a, slot::SCRATCH + 64, b"v1");
    put(&mut b, slot::SCRATCH + 64, b"v2");

    assert_eq!(call(&mut a, "proxy_get_shared_data", &[k, kl, OUT, OUT_SIZE, OUT_CAS]), NOT_FOUND);
    assert_eq!(call(&mut a, "proxy_set_shared_data", &[k, kl, v, vl, 0]), OK);
    assert_eq!(call(&mut a, "proxy_get_shared_data", &[k, kl, OUT, OUT_SIZE, OUT_CAS]), OK);
    let cas_a = read_u32(&mut a, slot::OUT + 8);
    assert_eq!(returned(&mut a), b"v1");

    // VM b reads the same entry and wins the race.
    assert_eq!(call(&mut b, "proxy_get_shared_data", &[k, kl, OUT, OUT_SIZE, OUT_CAS]), OK);
    let cas_b = read_u32(&mut b, slot::OUT + 8);
    assert_eq!(cas_a, cas_b);
    assert_eq!(call(&mut b, "proxy_set_shared_data", &[k, kl, v, vl, cas_b as i32]), OK);
    // a's CAS is now stale.
    assert_eq!(call(&mut a, "proxy_set_shared_data", &[k, kl, v, vl, cas_a as i32]), CAS_MISMATCH);
    let (value, cas) = host.shared_data_get("state").unwrap();
    assert_eq!(value, b"v2");
    assert_ne!(cas, cas_a);
}

#[test]
fn a_bad_cas_pointer_is_an_invalid_memory_access() {
    let host = probe_host();
    host.shared_data_set("k", b"v").unwrap();
    let mut vm = host.start_vm().unwrap();
    let (k, kl) = put(&mut vm, slot::SCRATCH, b"k");
    assert_eq!(
        call(&mut vm, "proxy_get_shared_data", &[k, kl, OUT, OUT_SIZE, OUT_OF_BOUNDS]),
        INVALID_MEMORY_ACCESS
    );
}

#[test]
fn shared_queues_deliver_queue_ready_to_the_registering_vm() {
    let host = probe_host();
    let mut owner = host.start_vm().unwrap();
    let mut producer = host.start_vm().unwrap();
    let (n, nl) = put(&mut owner, slot::SCRATCH, b"q");
    assert_eq!(call(&mut owner, "proxy_register_shared_queue", &[n, nl, OUT]), OK);
    let id = read_u32(&mut owner, slot::OUT) as i32;
    let (vm_id, vm_id_len) = put(&mut producer, slot::SCRATCH + 64, b"");
    let (n, nl) = put(&mut producer, slot::SCRATCH, b"q");
    assert_eq!(
        call(&mut producer, "proxy_resolve_shared_queue", &[vm_id, vm_id_len, n, nl, OUT]),
        OK
    );
    assert_eq!(read_u32(&mut producer, slot::OUT) as i32, id);
    let (item, item_len) = put(&mut producer, slot::SCRATCH + 128, b"item");
    assert_eq!(call(&mut producer, "proxy_enqueue_shared_queue", &[id, item, item_len]), OK);
    assert_eq!(producer.run_due().unwrap(), 0);
    assert_eq!(owner.run_due().unwrap(), 1);
    assert_eq!(read_u32(&mut owner, slot::QUEUE_READY) as i32, id);
    assert_eq!(call(&mut owner, "proxy_dequeue_shared_queue", &[id, OUT, OUT_SIZE]), OK);
    assert_eq!(returned(&mut owner), b"item");
    assert_eq!(call(&mut owner, "proxy_dequeue_shared_queue", &[id, OUT, OUT_SIZE]), EMPTY);
    assert_eq!(
        call(&mut owner, "proxy_dequeue_shared_queue", &[id + 100, OUT, OUT_SIZE]),
        NOT_FOUND
    );
}

/// Dispatches a call from the probe's root context; returns (status, token).
fn dispatch(vm: &mut Vm, upstream: &str, headers: &[(&str, &str)], timeout_ms: i32) -> (i32, u32) {
    let (u, ul) = put(vm, slot::SCRATCH, upstream.as_bytes());
    let (h, hl) = put(vm, slot::SCRATCH + 256, &encode_map(headers));
    let status = call(vm, "proxy_http_call", &[u, ul, h, hl, 0, 0, 0, 0, timeout_ms, OUT]);
    (status, read_u32(vm, slot::OUT))
}

const CALL_HEADERS: &[(&str, &str)] =
    &[(":method", "GET"), (":path", "/v1/active"), (":authority", "poller")];

#[test]
fn an_http_call_to_an_unknown_cluster_or_without_required_headers_is_a_bad_argument() {
    let mut vm = probe_host().with_known_clusters(["poller"]).start_vm().unwrap();
    assert_eq!(dispatch(&mut vm, "elsewhere", CALL_HEADERS, 1000).0, BAD_ARGUMENT);
    assert_eq!(
        dispatch(&mut vm, "poller", &[(":method", "GET"), (":path", "/")], 1000).0,
        BAD_ARGUMENT
    );
    assert!(vm.pending_http_calls().is_empty());
    assert_eq!(dispatch(&mut vm, "poller", CALL_HEADERS, 1000).0, OK);
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].upstream, "poller");
    assert_eq!(calls[0].header(":path"), Some("/v1/active"));
    assert_eq!(calls[0].timeout_ms, 1000);
}

#[test]
fn an_http_call_answer_body_is_readable_only_during_the_callback() {
    let mut vm = probe_host().start_vm().unwrap();
    let (_, token) = dispatch(&mut vm, "poller", CALL_HEADERS, 1000);
    vm.respond_http_call(token, HttpCallResponse::new(200, "hello")).unwrap();
    assert_eq!(read_u32(&mut vm, slot::CALL_HEADERS), 1, ":status is the one header");
    assert_eq!(read_u32(&mut vm, slot::CALL_BODY_SIZE), 5);
    assert_eq!(read_u32(&mut vm, slot::CALL_BODY_STATUS), OK as u32);
    let ptr = read_u32(&mut vm, slot::CALL_BODY_PTR);
    assert_eq!(vm.read_guest_memory(ptr, 5).unwrap(), b"hello");
    assert_eq!(call(&mut vm, "proxy_get_buffer_bytes", &[4, 0, 100, OUT, OUT_SIZE]), NOT_FOUND);
    assert!(
        matches!(vm.respond_http_call(token, HttpCallResponse::new(200, "")), Err(HostError::UnknownHttpCall(t)) if t == token)
    );
}

#[test]
fn a_failed_http_call_reports_no_headers_and_calls_are_answered_in_any_order() {
    let mut vm = probe_host().start_vm().unwrap();
    let (_, first) = dispatch(&mut vm, "poller", CALL_HEADERS, 1000);
    let (_, second) = dispatch(&mut vm, "poller", CALL_HEADERS, 1000);
    assert_ne!(first, second);
    vm.respond_http_call(second, HttpCallResponse::new(503, "")).unwrap();
    assert_eq!(read_u32(&mut vm, slot::CALL_HEADERS), 1);
    vm.fail_http_call(first).unwrap();
    assert_eq!(read_u32(&mut vm, slot::CALL_HEADERS), 0);
    assert_eq!(read_u32(&mut vm, slot::CALL_BODY_STATUS), NOT_FOUND as u32);
}

#[test]
fn an_http_call_times_out_on_the_virtual_clock() {
    let host = probe_host();
    let mut vm = host.start_vm().unwrap();
    let (_, _token) = dispatch(&mut vm, "poller", CALL_HEADERS, 500);
    host.advance(Duration::from_millis(499));
    assert_eq!(vm.run_due().unwrap(), 0);
    host.advance(Duration::from_millis(1));
    assert_eq!(vm.run_due().unwrap(), 1);
    assert!(vm.pending_http_calls().is_empty());
    assert_eq!(read_u32(&mut vm, slot::CALL_HEADERS), 0);
}

#[test]
fn ticks_follow_the_period_the_guest_set_on_the_virtual_clock() {
    let host = probe_host();
    let mut vm = host.start_vm().unwrap();
    assert!(!vm.tick().unwrap(), "no period set yet");
    assert_eq!(call(&mut vm, "proxy_set_tick_period_milliseconds", &[1000]), OK);
    host.advance(Duration::from_millis(999));
    assert_eq!(vm.run_due().unwrap(), 0);
    host.advance(Duration::from_millis(1));
    assert_eq!(vm.run_due().unwrap(), 1);
    // Missed periods collapse into one tick, as with Envoy's re-armed timer.
    host.advance(Duration::from_secs(10));
    assert_eq!(vm.run_due().unwrap(), 1);
    assert!(vm.tick().unwrap());
    assert_eq!(read_u32(&mut vm, slot::TICKS), 3);
}

#[test]
fn the_clock_is_virtual_and_moves_only_when_told() {
    let host = probe_host();
    let mut vm = host.start_vm().unwrap();
    assert_eq!(call(&mut vm, "proxy_get_current_time_nanoseconds", &[OUT]), OK);
    let t0 = u64::from_le_bytes(vm.read_guest_memory(slot::OUT, 8).unwrap().try_into().unwrap());
    assert_eq!(t0, 1_704_067_200 * 1_000_000_000);
    host.advance(Duration::from_millis(1500));
    assert!(vm.call_export(None, "call_clock_time_get", &[]).is_err(), "wrong arity is an error");
    let status =
        vm.call_export(None, "call_proxy_get_current_time_nanoseconds", &[OUT]).unwrap()[0];
    assert_eq!(status, OK);
    let t1 = u64::from_le_bytes(vm.read_guest_memory(slot::OUT, 8).unwrap().try_into().unwrap());
    assert_eq!(t1 - t0, 1_500_000_000);
}

#[test]
fn a_local_response_is_captured_with_bytes_headers() {
    let mut vm = probe_host().start_vm().unwrap();
    let ctx = vm.send_request(&[(":path", "/x")]).unwrap().context_id;
    let (d, dl) = put(&mut vm, slot::SCRATCH, b"redirect");
    let (b, bl) = put(&mut vm, slot::SCRATCH + 64, b"");
    let mut headers = encode_map(&[("Location", "http://a/x")]);
    headers.extend_from_slice(b""); // keep as is
    let (h, hl) = put(&mut vm, slot::SCRATCH + 128, &headers);
    assert_eq!(
        call_in(&mut vm, Some(ctx), "proxy_send_local_response", &[307, d, dl, b, bl, h, hl, -1]),
        OK
    );
    let outcome = vm.finish_request(ctx).unwrap();
    let response = outcome.local_response.unwrap();
    assert_eq!(response.status, 307);
    assert_eq!(response.header("location"), Some("http://a/x"));
    assert_eq!(response.details, "redirect");
    assert_eq!(response.grpc_status, None);
}

#[test]
fn a_counter_only_grows_and_every_vm_adds_to_the_same_stat() {
    let host = probe_host();
    let mut a = host.start_vm().unwrap();
    let mut b = host.start_vm().unwrap();
    let define = |vm: &mut Vm| {
        let (n, nl) = put(vm, slot::SCRATCH, b"requests");
        assert_eq!(call(vm, "proxy_define_metric", &[0, n, nl, OUT]), OK);
        read_u32(vm, slot::OUT) as i32
    };
    let (ida, idb) = (define(&mut a), define(&mut b));
    assert_eq!(call(&mut a, "proxy_increment_metric", &[ida, 2]), OK);
    assert_eq!(call(&mut b, "proxy_increment_metric", &[idb, 3]), OK);
    assert_eq!(call(&mut a, "proxy_increment_metric", &[ida, -1]), BAD_ARGUMENT);
    assert_eq!(call(&mut a, "proxy_increment_metric", &[ida, 0]), BAD_ARGUMENT);
    assert_eq!(call(&mut a, "proxy_get_metric", &[ida, OUT]), OK);
    assert_eq!(read_u32(&mut a, slot::OUT), 5);
    assert_eq!(call(&mut b, "proxy_get_metric", &[idb + 4, OUT]), NOT_FOUND);
    assert_eq!(host.metrics().get("requests"), Some(&Metric::Counter(5)));
    assert_eq!(call(&mut a, "proxy_define_metric", &[3, 0, 0, OUT]), BAD_ARGUMENT);
}

#[test]
fn a_gauge_goes_both_ways_and_a_histogram_records_but_cannot_be_read() {
    let host = probe_host();
    let mut vm = host.start_vm().unwrap();
    let (n, nl) = put(&mut vm, slot::SCRATCH, b"active");
    assert_eq!(call(&mut vm, "proxy_define_metric", &[1, n, nl, OUT]), OK);
    let gauge = read_u32(&mut vm, slot::OUT) as i32;
    assert_eq!(call(&mut vm, "proxy_record_metric", &[gauge, 10]), OK);
    assert_eq!(call(&mut vm, "proxy_increment_metric", &[gauge, -4]), OK);
    assert_eq!(host.metric("active"), Some(6));
    let (n, nl) = put(&mut vm, slot::SCRATCH, b"latency");
    assert_eq!(call(&mut vm, "proxy_define_metric", &[2, n, nl, OUT]), OK);
    let histogram = read_u32(&mut vm, slot::OUT) as i32;
    assert_eq!(call(&mut vm, "proxy_record_metric", &[histogram, 7]), OK);
    assert_eq!(call(&mut vm, "proxy_record_metric", &[histogram, 9]), OK);
    assert_eq!(call(&mut vm, "proxy_get_metric", &[histogram, OUT]), BAD_ARGUMENT);
    assert_eq!(host.metrics().get("latency"), Some(&Metric::Histogram(vec![7, 9])));
}

#[test]
fn unknown_properties_are_not_found_and_defaults_look_like_envoy() {
    let mut vm = probe_host()
        .with_plugin_name("vault_redirect")
        .with_property(&["custom", "key"], "v")
        .start_vm()
        .unwrap();
    let (p, pl) = put(&mut vm, slot::SCRATCH, b"plugin_name");
    assert_eq!(call(&mut vm, "proxy_get_property", &[p, pl, OUT, OUT_SIZE]), OK);
    assert_eq!(returned(&mut vm), b"vault_redirect");
    let (p, pl) = put(&mut vm, slot::SCRATCH, b"custom\0key");
    assert_eq!(call(&mut vm, "proxy_get_property", &[p, pl, OUT, OUT_SIZE]), OK);
    assert_eq!(returned(&mut vm), b"v");
    let (p, pl) = put(&mut vm, slot::SCRATCH, b"no\0such\0thing");
    assert_eq!(call(&mut vm, "proxy_get_property", &[p, pl, OUT, OUT_SIZE]), NOT_FOUND);
    let ctx = vm.send_request(&[(":path", "/a?b=1"), (":method", "GET")]).unwrap().context_id;
    let (p, pl) = put(&mut vm, slot::SCRATCH, b"request\0url_path");
    assert_eq!(call_in(&mut vm, Some(ctx), "proxy_get_property", &[p, pl, OUT, OUT_SIZE]), OK);
    assert_eq!(returned(&mut vm), b"/a");
}

#[test]
fn grpc_and_foreign_functions_answer_statuses_the_sdk_handles_without_panicking() {
    let mut vm = probe_host().start_vm().unwrap();
    let args = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1000, OUT];
    assert_eq!(call(&mut vm, "proxy_grpc_call", &args), INTERNAL_FAILURE);
    assert_eq!(call(&mut vm, "proxy_grpc_cancel", &[1]), NOT_FOUND);
    assert_eq!(
        call(&mut vm, "proxy_call_foreign_function", &[0, 0, 0, 0, OUT, OUT_SIZE]),
        NOT_FOUND
    );
    assert_eq!(call(&mut vm, "proxy_done", &[]), NOT_FOUND);
    assert_eq!(call(&mut vm, "proxy_set_effective_context", &[12345]), BAD_ARGUMENT);
    assert_eq!(call(&mut vm, "proxy_set_effective_context", &[1]), OK);
}

#[test]
fn stdout_and_stderr_become_log_lines_without_their_newline() {
    let mut vm = probe_host().start_vm().unwrap();
    let (text, len) = put(&mut vm, slot::SCRATCH, b"panicked at x\n");
    let mut iovec = (text as u32).to_le_bytes().to_vec();
    iovec.extend_from_slice(&(len as u32).to_le_bytes());
    let (iov, _) = put(&mut vm, slot::SCRATCH + 64, &iovec);
    assert_eq!(call(&mut vm, "fd_write", &[2, iov, 1, OUT]), 0);
    assert_eq!(read_u32(&mut vm, slot::OUT), len as u32);
    assert_eq!(call(&mut vm, "fd_write", &[1, iov, 1, OUT]), 0);
    assert_eq!(call(&mut vm, "fd_write", &[5, iov, 1, OUT]), WASI_BADF);
    assert_eq!(call(&mut vm, "fd_write", &[1, OUT_OF_BOUNDS, 1, OUT]), WASI_FAULT);
    assert_eq!(
        vm.logs(),
        vec![
            (LogLevel::Error, "panicked at x".to_owned()),
            (LogLevel::Info, "panicked at x".to_owned())
        ]
    );
}

#[test]
fn randomness_is_the_same_for_the_same_seed_and_differs_between_vms() {
    let draw = |seed: u64, vms: usize| -> Vec<Vec<u8>> {
        let host = probe_host().with_random_seed(seed);
        (0..vms)
            .map(|_| {
                let mut vm = host.start_vm().unwrap();
                assert_eq!(call(&mut vm, "random_get", &[slot::SCRATCH as i32, 16]), 0);
                vm.read_guest_memory(slot::SCRATCH, 16).unwrap()
            })
            .collect()
    };
    assert_eq!(draw(7, 2), draw(7, 2));
    let two = draw(7, 2);
    assert_ne!(two[0], two[1]);
    assert_ne!(draw(7, 1), draw(8, 1));
}

#[test]
fn a_guest_trap_is_an_error_with_a_wasm_backtrace_and_fails_the_vm() {
    let mut vm = probe_host().start_vm().unwrap();
    let error = vm.call_export(None, "trap", &[]).unwrap_err();
    let HostError::Trap { function, details } = &error else {
        panic!("expected a trap, got {error}");
    };
    assert_eq!(function, "trap");
    assert!(details.contains("backtrace"), "{details}");
    assert!(matches!(vm.tick(), Err(HostError::VmFailed(_)) | Ok(false)));
    assert!(matches!(vm.send_request(&[(":path", "/")]), Err(HostError::VmFailed(_))));
}

#[test]
fn proc_exit_traps_instead_of_exiting_the_test_process() {
    let mut vm = probe_host().start_vm().unwrap();
    let error = vm.call_export(None, "call_proc_exit", &[3]).unwrap_err();
    assert!(format!("{error}").contains("proc_exit(3)"), "{error}");
}

#[test]
fn a_guest_that_runs_out_of_fuel_traps_instead_of_hanging() {
    let mut vm = probe_host().with_fuel_per_call(100_000).start_vm().unwrap();
    let error = vm.call_export(None, "spin", &[]).unwrap_err();
    assert!(matches!(error, HostError::Trap { .. }), "{error}");
}

#[test]
fn fuel_is_metered_per_call_and_is_the_same_for_the_same_inputs() {
    let fuel = || {
        let mut vm = probe_host().start_vm().unwrap();
        let outcome = vm.send_request(&[(":path", "/")]).unwrap();
        vm.call_export(None, "bump", &[]).unwrap();
        (outcome.fuel, vm.fuel_used_last_call())
    };
    let (a, b) = (fuel(), fuel());
    assert_eq!(a, b);
    assert!(a.0 > 0 && a.1 > 0);
}

#[test]
fn a_module_importing_what_envoy_lacks_is_refused_at_start_naming_the_import() {
    let wat = r#"(module (import "wasi_snapshot_preview1" "fd_prestat_get" (func (param i32 i32) (result i32))) (memory (export "memory") 1))"#;
    let host = host_test::Host::from_bytes(wat.as_bytes()).unwrap();
    let error = host.start_vm().err().expect("instantiation fails");
    assert!(format!("{error}").contains("fd_prestat_get"), "{error}");
}
