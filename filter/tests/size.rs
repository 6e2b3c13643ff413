//! The release `.wasm` must stay small: Envoy compiles it in every worker of every proxy, and
//! a size jump is usually a dependency pulled in by accident (serde_json alone added 88 KB).
//!
//! The goal is 100 KB (issue 5). Measured (docs/BENCHMARKS.md): 164 KB as cargo built it with
//! the SDK's dispatcher, 140 KB with only the callbacks the filter implements, 89.5 KB once the
//! SDK's dispatcher is left out at link time (filter/link/wasm-ld) and binaryen's wasm-opt -Oz
//! has run (scripts/build.sh). The gate is the goal.
#![allow(clippy::unwrap_used, clippy::panic)]

/// 100 KB, counted in decimal so that the figure in the issue is the bound.
const MAX_BYTES: u64 = 100_000;

#[test]
fn the_release_wasm_stays_under_its_size_gate() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip1/wasm-release/vault_redirect_filter.wasm");
    let size = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; build it with scripts/build.sh", path.display()))
        .len();
    println!("vault_redirect_filter.wasm: {size} bytes (gate {MAX_BYTES})");
    assert!(size <= MAX_BYTES, "the filter grew to {size} bytes, past the {MAX_BYTES}-byte gate");
}
