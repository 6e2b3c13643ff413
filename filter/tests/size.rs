//! The shipped `.wasm` must stay small: Envoy compiles it in every worker of every proxy, and
//! a size jump is usually a dependency pulled in by accident (serde_json alone added 88 KB).
//!
//! The goal is 100 KB (issue 5). Measured (docs/architecture.md, docs/BENCHMARKS.md): 164 KB
//! with the proxy-wasm SDK's dispatcher as cargo built it, 122 KB with the SDK's unused
//! callbacks removed by wasm-metadce, 89.6 KB with the filter's own exports and no SDK after
//! binaryen's wasm-opt -Oz (scripts/build.sh), 94.7 KB since the filter is compiled for speed
//! (opt-level 3, a third fewer instructions per request). The gate is the goal.
#![allow(clippy::unwrap_used, clippy::panic)]

/// 100 KB, counted in decimal so that the figure in the issue is the bound.
const MAX_BYTES: u64 = 100_000;

#[test]
fn the_shipped_wasm_stays_under_its_size_gate() {
    let path = host_test::shipped::filter_wasm().unwrap_or_else(|e| panic!("{e}"));
    let size = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len();
    println!("vault_redirect_filter.wasm: {size} bytes (gate {MAX_BYTES})");
    assert!(size <= MAX_BYTES, "the filter grew to {size} bytes, past the {MAX_BYTES}-byte gate");
}
