#!/usr/bin/env bash
# Builds the artifacts the demo and the end-to-end tests run: the filter's release .wasm
# (the exact file Envoy loads) and the poller binary.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/wasm32-wasip1/wasm-release
wasm=$out/vault_redirect_filter.wasm
cargo build --quiet -p vault-redirect-filter --target wasm32-wasip1 --profile wasm-release
# Work on a copy of what cargo linked (deps/), never on cargo's file itself, so every run
# starts from the same input and gives the same module.
cp "$out/deps/vault_redirect_filter.wasm" "$wasm.tmp"
# Post-link: the filter's own callbacks take the ABI's names from the SDK's dispatcher, and
# every callback it does not implement goes, so Envoy enters the VM only for those it needs
# (filter/link). Cargo's output is not a usable filter until this has run.
cargo run --quiet --release -p vault-redirect-filter-link -- "$wasm.tmp"
# Size: binaryen's optimiser (Debian's binaryen, installed by scripts/setup.sh) shrinks what
# LLVM left. The features are those rustc enables for wasm32-wasip1 and this module uses; the
# link step's output carries no target_features section for wasm-opt to read them from.
command -v wasm-opt >/dev/null || { echo "build: wasm-opt missing: run scripts/setup.sh" >&2; exit 1; }
wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int "$wasm.tmp" -o "$wasm.opt"
rm "$wasm.tmp"
mv "$wasm.opt" "$wasm"
cargo build --quiet -p vault-redirect-poller --bins
echo "build: $(stat -c %s "$wasm") bytes of wasm, poller at target/debug/vault-redirect-poller"
