#!/usr/bin/env bash
# Builds the artifacts the demo and the end-to-end tests run: the filter's release .wasm
# (the exact file Envoy loads) and the poller binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p vault-redirect-filter --target wasm32-wasip1 --profile wasm-release
# Keep only the callbacks the filter implements: Envoy then skips the others on every request.
cargo run --quiet --release -p vault-redirect-filter-trim -- target/wasm32-wasip1/wasm-release/vault_redirect_filter.wasm
cargo build --quiet -p vault-redirect-poller --bins
echo "build: $(ls -l target/wasm32-wasip1/wasm-release/vault_redirect_filter.wasm | awk '{print $5}') bytes of wasm, poller at target/debug/vault-redirect-poller"
