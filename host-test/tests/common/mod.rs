//! Shared helpers for host-test's integration tests: a hand-written probe module that re-exports
//! every import as `call_<name>` so a test can hit the host with any pointer it likes, and the
//! path of the real filter.
#![allow(dead_code)]

use host_test::Host;

/// (module, name, params, returns an i32)
const IMPORTS: &[(&str, &str, &[&str], bool)] = &[
    ("env", "proxy_log", &["i32", "i32", "i32"], true),
    ("env", "proxy_get_log_level", &["i32"], true),
    ("env", "proxy_get_current_time_nanoseconds", &["i32"], true),
    ("env", "proxy_set_tick_period_milliseconds", &["i32"], true),
    ("env", "proxy_get_buffer_bytes", &["i32", "i32", "i32", "i32", "i32"], true),
    ("env", "proxy_get_buffer_status", &["i32", "i32", "i32"], true),
    ("env", "proxy_set_buffer_bytes", &["i32", "i32", "i32", "i32", "i32"], true),
    ("env", "proxy_get_header_map_pairs", &["i32", "i32", "i32"], true),
    ("env", "proxy_set_header_map_pairs", &["i32", "i32", "i32"], true),
    ("env", "proxy_get_header_map_value", &["i32", "i32", "i32", "i32", "i32"], true),
    ("env", "proxy_add_header_map_value", &["i32", "i32", "i32", "i32", "i32"], true),
    ("env", "proxy_replace_header_map_value", &["i32", "i32", "i32", "i32", "i32"], true),
    ("env", "proxy_remove_header_map_value", &["i32", "i32", "i32"], true),
    ("env", "proxy_get_header_map_size", &["i32", "i32"], true),
    ("env", "proxy_get_shared_data", &["i32", "i32", "i32", "i32", "i32"], true),
    ("env", "proxy_set_shared_data", &["i32", "i32", "i32", "i32", "i32"], true),
    ("env", "proxy_register_shared_queue", &["i32", "i32", "i32"], true),
    ("env", "proxy_resolve_shared_queue", &["i32", "i32", "i32", "i32", "i32"], true),
    ("env", "proxy_enqueue_shared_queue", &["i32", "i32", "i32"], true),
    ("env", "proxy_dequeue_shared_queue", &["i32", "i32", "i32"], true),
    (
        "env",
        "proxy_http_call",
        &["i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32"],
        true,
    ),
    (
        "env",
        "proxy_send_local_response",
        &["i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32"],
        true,
    ),
    ("env", "proxy_continue_stream", &["i32"], true),
    ("env", "proxy_close_stream", &["i32"], true),
    ("env", "proxy_get_status", &["i32", "i32", "i32"], true),
    (
        "env",
        "proxy_grpc_call",
        &["i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32", "i32"],
        true,
    ),
    ("env", "proxy_grpc_cancel", &["i32"], true),
    ("env", "proxy_define_metric", &["i32", "i32", "i32", "i32"], true),
    ("env", "proxy_increment_metric", &["i32", "i64"], true),
    ("env", "proxy_record_metric", &["i32", "i64"], true),
    ("env", "proxy_get_metric", &["i32", "i32"], true),
    ("env", "proxy_get_property", &["i32", "i32", "i32", "i32"], true),
    ("env", "proxy_set_property", &["i32", "i32", "i32", "i32"], true),
    ("env", "proxy_set_effective_context", &["i32"], true),
    ("env", "proxy_done", &[], true),
    ("env", "proxy_call_foreign_function", &["i32", "i32", "i32", "i32", "i32", "i32"], true),
    ("wasi_snapshot_preview1", "fd_write", &["i32", "i32", "i32", "i32"], true),
    ("wasi_snapshot_preview1", "clock_time_get", &["i32", "i64", "i32"], true),
    ("wasi_snapshot_preview1", "random_get", &["i32", "i32"], true),
    ("wasi_snapshot_preview1", "environ_sizes_get", &["i32", "i32"], true),
    ("wasi_snapshot_preview1", "proc_exit", &["i32"], false),
];

/// Where the probe's callbacks leave what they saw.
pub mod slot {
    /// `proxy_on_http_call_response`: num_headers, body_size, then the body's (ptr, size) and
    /// the status of the `proxy_get_buffer_bytes` call made inside the callback.
    pub const CALL_HEADERS: u32 = 0x200;
    pub const CALL_BODY_SIZE: u32 = 0x204;
    pub const CALL_BODY_PTR: u32 = 0x208;
    pub const CALL_BODY_LEN: u32 = 0x20c;
    pub const CALL_BODY_STATUS: u32 = 0x210;
    /// How many times `proxy_on_tick` ran.
    pub const TICKS: u32 = 0x300;
    /// The last queue id `proxy_on_queue_ready` saw.
    pub const QUEUE_READY: u32 = 0x304;
    /// Scratch space tests write their arguments to.
    pub const SCRATCH: u32 = 0x1000;
    /// Where return values (ptr, size, cas, ids) are written.
    pub const OUT: u32 = 0x800;
}

/// The probe module's text. Its allocator bumps from 32 KiB; memory is one 64 KiB page, so any
/// pointer at or past 0x10000 is out of bounds.
pub fn probe_wat() -> String {
    let mut imports = String::new();
    let mut wrappers = String::new();
    for (module, name, params, returns) in IMPORTS {
        let params_decl: String = params.iter().map(|p| format!(" {p}")).collect();
        let result = if *returns { " (result i32)" } else { "" };
        imports.push_str(&format!(
            "  (import \"{module}\" \"{name}\" (func ${name} (param{params_decl}){result}))\n"
        ));
        // Wrappers take only i32s (sign-extended where the import wants an i64) so tests can
        // drive them through `Vm::call_export`.
        let wrapper_params: String = params.iter().map(|_| " i32").collect();
        let gets: String = params
            .iter()
            .enumerate()
            .map(|(i, p)| match *p {
                "i64" => format!(" local.get {i} i64.extend_i32_s"),
                _ => format!(" local.get {i}"),
            })
            .collect();
        wrappers.push_str(&format!(
            "  (func (export \"call_{name}\") (param{wrapper_params}){result}{gets} call ${name})\n"
        ));
    }
    format!(
        r#"(module
{imports}
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 32768))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $bump local.set $p
    global.get $bump local.get $n i32.add global.set $bump
    local.get $p)
  (func (export "bump") (result i32) global.get $bump)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
  (func (export "proxy_on_tick") (param i32)
    i32.const {ticks} i32.const {ticks} i32.load i32.const 1 i32.add i32.store)
  (func (export "proxy_on_queue_ready") (param i32 i32)
    i32.const {queue} local.get 1 i32.store)
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    i32.const {headers} local.get 2 i32.store
    i32.const {body_size} local.get 3 i32.store
    i32.const {body_status}
    (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (local.get 3) (i32.const {body_ptr}) (i32.const {body_len}))
    i32.store)
  (func (export "trap") unreachable)
  (func (export "spin") (loop br 0))
{wrappers})"#,
        ticks = slot::TICKS,
        queue = slot::QUEUE_READY,
        headers = slot::CALL_HEADERS,
        body_size = slot::CALL_BODY_SIZE,
        body_status = slot::CALL_BODY_STATUS,
        body_ptr = slot::CALL_BODY_PTR,
        body_len = slot::CALL_BODY_LEN,
    )
}

/// A host running the probe module.
pub fn probe_host() -> Host {
    Host::from_bytes(probe_wat().as_bytes()).expect("the probe module compiles")
}

/// A host of its own running the shipped filter.
pub fn filter_host() -> Host {
    host_test::shipped::host().unwrap_or_else(|e| panic!("{e}"))
}

/// The shipped filter, the file Envoy loads; missing means the test must fail, saying how to
/// build it.
pub fn filter_wasm_path() -> std::path::PathBuf {
    host_test::shipped::filter_wasm().unwrap_or_else(|e| panic!("{e}"))
}

/// Little-endian u32 from guest memory.
pub fn read_u32(vm: &mut host_test::Vm, ptr: u32) -> u32 {
    let bytes = vm.read_guest_memory(ptr, 4).expect("in bounds");
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Serialises header pairs the proxy-wasm way.
pub fn encode_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}
