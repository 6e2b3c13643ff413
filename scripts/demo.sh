#!/usr/bin/env bash
# The demo: a simulated three-node Vault cluster in a Consul double, the poller, and real Envoy
# with the filter. Shows a redirect, fails the active node over, shows the new redirect, and
# stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cargo run --quiet -p vault-redirect-e2e --bin demo
