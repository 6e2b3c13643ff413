//! The build is cargo plus wasm-opt, nothing else (issue 15): the module cargo emits already
//! exports exactly the filter's callbacks under the ABI's names, and so does the shipped
//! `.wasm`. Envoy enters the VM for each callback a module exports, so a callback the filter
//! does not need (`proxy_on_delete`, `proxy_on_log`, ...) must not be there.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

/// Everything the filter exports: the memory, WASI's initialiser, the ABI version marker, the
/// allocator the host writes into, and the callbacks of filter/src/abi.rs. Requests need only
/// `proxy_on_context_create` and `proxy_on_request_headers`.
const EXPORTS: &[&str] = &[
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_http_call_response",
];

fn exports_of(path: &Path) -> BTreeSet<String> {
    let module = wasmtime::Module::from_file(&wasmtime::Engine::default(), path)
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    module.exports().map(|e| e.name().to_owned()).collect()
}

fn expected() -> BTreeSet<String> {
    EXPORTS.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_shipped_wasm_exports_exactly_the_filters_callbacks() {
    let shipped = host_test::shipped::filter_wasm().unwrap_or_else(|e| panic!("{e}"));
    let exported = exports_of(&shipped);
    assert_eq!(exported, expected());
    for absent in ["proxy_on_delete", "proxy_on_done", "proxy_on_log", "proxy_on_response_headers"]
    {
        assert!(
            !exported.contains(absent),
            "{absent} is exported: Envoy would enter the VM for it on every request"
        );
    }
}

#[test]
fn cargos_own_output_already_exports_the_same_callbacks() {
    // No step between cargo and wasm-opt renames or removes exports: what cargo links is the
    // filter, wasm-opt only makes it smaller.
    let built = host_test::shipped::cargo_output_path();
    assert!(built.is_file(), "{} is missing: run scripts/build.sh", built.display());
    assert_eq!(exports_of(&built), expected());
}
