#!/usr/bin/env bash
# The soak (docs/BENCHMARKS.md): 10 minutes of load through real Envoy with a failover every
# 3 s; reports RSS at start and end and any answer that is neither a right 307 nor a 503.
# Not part of the test command. SOAK_SECONDS shortens or lengthens it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cargo build --quiet --release -p vault-redirect-poller
VAULT_REDIRECT_POLLER_BIN=$PWD/target/release/vault-redirect-poller cargo run --quiet --release -p vault-redirect-e2e --bin soak
