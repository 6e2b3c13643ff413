//! The release `.wasm` is trimmed (scripts/build.sh): it exports exactly the callbacks the
//! filter implements, so Envoy crosses into V8 only for those on each request.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;

#[test]
fn the_release_wasm_exports_only_the_callbacks_the_filter_implements() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip1/wasm-release/vault_redirect_filter.wasm");
    let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/build.sh", path.display()));
    let exports: BTreeSet<String> = vault_redirect_filter_trim::exports(&wasm).unwrap().into_iter().collect();
    let keep: BTreeSet<String> = vault_redirect_filter_trim::KEEP.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        exports, keep,
        "the .wasm is not trimmed (run scripts/build.sh, which trims after cargo builds it), or KEEP is out of date"
    );
    // Trimming again changes nothing: the step is idempotent, so build.sh may always run it.
    let (again, dropped) = vault_redirect_filter_trim::trim(&wasm).unwrap();
    assert_eq!((dropped, again.len()), (0, wasm.len()));
}

#[test]
fn trimming_refuses_a_module_that_is_not_the_filter() {
    let not_filter = wat_module();
    let err = vault_redirect_filter_trim::trim(&not_filter).unwrap_err().to_string();
    assert!(err.contains("does not export memory") || err.contains("does not export"), "{err}");
}

/// A minimal valid module exporting one function and nothing the filter needs.
fn wat_module() -> Vec<u8> {
    // (module (func (export "f")))
    vec![0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 7, 5, 1, 1, 102, 0, 0, 10, 4, 1, 2, 0, 11]
}
