//! The release `.wasm` must stay small: Envoy compiles it in every worker of every proxy, and
//! a size jump is usually a dependency pulled in by accident (serde_json alone added 88 KB).
//!
//! The goal is 100 KB; measured (docs/BENCHMARKS.md): a filter that does nothing but
//! answer with the proxy-wasm 0.2.5 SDK and std is already 82 KB; this filter is 164 KB as
//! cargo builds it and 140 KB once scripts/build.sh has trimmed the callbacks it does not
//! implement (filter/trim). The gate sits just above today's size so growth fails here.
#![allow(clippy::unwrap_used, clippy::panic)]

/// Today's trimmed size plus about 5 %.
const MAX_BYTES: u64 = 148_000;

#[test]
fn the_release_wasm_stays_under_its_size_gate() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip1/wasm-release/vault_redirect_filter.wasm");
    let size = std::fs::metadata(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it with scripts/build.sh",
                path.display()
            )
        })
        .len();
    println!("vault_redirect_filter.wasm: {size} bytes (gate {MAX_BYTES})");
    assert!(size <= MAX_BYTES, "the filter grew to {size} bytes, past the {MAX_BYTES}-byte gate");
}
