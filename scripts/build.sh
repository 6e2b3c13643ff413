#!/usr/bin/env bash
# Builds the artifacts the demo and the end-to-end tests run: the filter's shipped .wasm (the
# exact file Envoy loads) and the poller binary. `scripts/build.sh filter` builds the .wasm
# only: scripts/test.sh leaves the poller to `cargo test --workspace`, whose feature set
# differs from a lone `cargo build -p` and would compile tokio, hyper, reqwest, axum and kube
# a second time for a binary the tests then overwrite.
set -euo pipefail
what=${1:-all}
case $what in all|filter) ;; *) echo "usage: scripts/build.sh [filter]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
source scripts/filter-wasm.sh
cargo build --quiet -p vault-redirect-filter --target wasm32-wasip1 --profile wasm-release
command -v wasm-opt >/dev/null || { echo "build: wasm-opt missing: run scripts/setup.sh" >&2; exit 1; }
# The features rustc enables for wasm32-wasip1 and this module uses: the stripped module
# carries no target_features section for binaryen to read them from.
features=(--enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int)
mkdir -p "$(dirname "$filter_wasm")"
# Size: binaryen's optimiser (Debian's binaryen, installed by scripts/setup.sh) shrinks what
# LLVM left. Written next to the shipped file, then moved, so a failed run leaves no half file.
wasm-opt -Oz "${features[@]}" "$filter_wasm_cargo" -o "$filter_wasm.tmp"
mv "$filter_wasm.tmp" "$filter_wasm"
if [ "$what" = filter ]; then
  echo "build: $(stat -c %s "$filter_wasm") bytes of wasm at $filter_wasm"
  exit 0
fi
cargo build --quiet -p vault-redirect-poller --bins
echo "build: $(stat -c %s "$filter_wasm") bytes of wasm at $filter_wasm, poller at target/debug/vault-redirect-poller"
