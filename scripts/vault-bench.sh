#!/usr/bin/env bash
# The vault source's figures (docs/BENCHMARKS.md, "The vault source on real OpenBao"): a real
# three-node OpenBao cluster, the release poller on --source vault, real Envoy; failover lag,
# probe load per node, the poller's idle CPU and RSS. Not part of the test command; takes a
# few minutes. FAILOVERS, IDLE_SECONDS and PROBE_INTERVALS tune it (see the binary's header).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cargo build --quiet --release -p vault-redirect-poller
VAULT_REDIRECT_POLLER_BIN="${CARGO_TARGET_DIR:-target}/release/vault-redirect-poller" \
  cargo run --quiet -p vault-redirect-e2e --bin vault_failover
