# Sourced by the scripts: where the filter's .wasm is. The shipped file (what Envoy loads,
# written by scripts/build.sh) lives outside cargo's own output, which cargo overwrites on
# every build. The Rust side of this (tests, host-test) is host_test::shipped.
target_dir=${CARGO_TARGET_DIR:-target}
filter_wasm_cargo=$target_dir/wasm32-wasip1/wasm-release/vault_redirect_filter.wasm
filter_wasm=$target_dir/filter/vault_redirect_filter.wasm
