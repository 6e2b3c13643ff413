# Sourced by the scripts, from the workspace root: where the filter's .wasm files are. The
# shipped one (what Envoy loads; scripts/build.sh writes it) lives outside cargo's own output,
# which cargo rewrites on every build. Tests and host-test find it through host_test::shipped,
# and host-test/tests/scenarios.rs checks that both name the same file.
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$PWD/$target_dir
# What cargo links (the wasm-release profile, Cargo.toml).
filter_wasm_cargo=$target_dir/wasm32-wasip1/wasm-release/vault_redirect_filter.wasm
# The shipped filter: cargo's module after wasm-opt.
filter_wasm=$target_dir/filter/vault_redirect_filter.wasm
