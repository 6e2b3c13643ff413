#!/usr/bin/env bash
# The fan-out bench (docs/BENCHMARKS.md, "Fan-out"): one release poller holding
# FANOUT_WAITERS (default 10000) long-polls on loopback, one Consul change; prints the poller's
# RSS and the change-to-answer times. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each waiter is a socket in the bench and one in the poller (a child: it inherits this).
ulimit -n "$(ulimit -Hn)"
cargo build --quiet --release -p vault-redirect-poller
cargo build --quiet --release -p vault-redirect-e2e --bin fanout
VAULT_REDIRECT_POLLER_BIN="$PWD/target/release/vault-redirect-poller" target/release/fanout
