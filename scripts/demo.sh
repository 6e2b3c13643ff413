#!/usr/bin/env bash
# The demo. `scripts/demo.sh`: a real three-node OpenBao cluster, the poller and real Envoy with
# the filter; a client writes a secret through Envoy, the active node steps down, the Location
# moves, the client reads the secret back. `scripts/demo.sh consul`: the same story on a
# simulated cluster (the Consul double). Everything is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cargo run --quiet -p vault-redirect-e2e --bin demo -- "$@"
