#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds the artifacts the
# end-to-end tests run (the release .wasm, the poller binary), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# The release checked here is x86_64 only (below): setup then skips the aarch64 toolchain.
export VAULT_REDIRECT_ARCHES=x86_64
scripts/setup.sh --tests
# Hygiene is a gate: the tree is formatted and clippy-clean (warnings are errors) before
# anything is built or run.
cargo fmt --all --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
# The shipped .wasm only: `cargo test` below builds the poller binary the tests run.
scripts/build.sh filter
# The release that tests/tests/release.rs reads (target/dist): x86_64 only here, as the
# aarch64 cross build of the poller costs minutes more, and an unoptimised poller
# (release-check) as the test inspects and runs the packaging, not the optimiser's work;
# scripts/release.sh alone builds both architectures, optimised. It builds in the background,
# in a target directory of its own (neither build waits on the other's lock), while the test
# binaries build and every other test runs: most end-to-end tests wait on real time
# (elections, long-polls, timers), and the release build uses the cores they leave idle.
release_log=$(mktemp)
VAULT_REDIRECT_POLLER_PROFILE=release-check VAULT_REDIRECT_FILTER_BUILT=1 \
  VAULT_REDIRECT_POLLER_TARGET_DIR="${CARGO_TARGET_DIR:-target}/release-check-build" \
  scripts/release.sh >"$release_log" 2>&1 &
release_pid=$!
trap 'kill "$release_pid" 2>/dev/null || true; rm -f "$release_log"' EXIT
status=0
cargo test --workspace --no-fail-fast -- --skip release_artifacts:: || status=$?
if ! wait "$release_pid"; then
  cat "$release_log" >&2
  echo "test.sh: scripts/release.sh failed" >&2
  exit 1
fi
cat "$release_log"
trap - EXIT
rm -f "$release_log"
# The release's own tests, now that it is built (same workspace-wide features: no rebuild).
cargo test --workspace --no-fail-fast --test release || status=$?
[ "$status" -eq 0 ] || { echo "test.sh: tests failed" >&2; exit "$status"; }
# The shared decisions again, compiled for the filter's own target (wasm32-wasip1) and run
# under Node's WASI: the same unit tests, on the instruction set Envoy runs them on. (Panics
# abort on this target: the first failing test ends the run, non-zero.)
CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $PWD/scripts/wasi-run.mjs" \
  cargo test -p vault-redirect-core --target wasm32-wasip1
# Every committed host-test scenario, replayed by the CLI exactly as users run it in their CI
# (NAME.json with its plugin configuration NAME.config.json), on the shipped filter (the CLI's
# default --wasm); a mismatch exits non-zero.
# (The CLI is the binary `cargo test` built for host-test's own CLI tests: a separate
# `cargo build -p host-test` would resolve other features and rebuild its dependencies.)
for scenario in host-test/scenarios/*.json; do
  case "$scenario" in *.config.json) continue ;; esac
  "${CARGO_TARGET_DIR:-target}/debug/host-test" run \
    --config "${scenario%.json}.config.json" --scenario "$scenario"
done
echo "test.sh: finished in $(( $(date +%s) - start )) s"
