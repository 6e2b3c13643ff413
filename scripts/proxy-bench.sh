#!/usr/bin/env bash
# Proxy mode's figures (docs/BENCHMARKS.md, "Proxy mode"); not part of the test command.
#   scripts/proxy-bench.sh            # proxy mode vs Envoy's own routing to a static cluster:
#                                     # CPU per request and throughput (BENCH_SECONDS, BENCH_ROUNDS,
#                                     # BENCH_CONCURRENCY; tests/src/bin/proxy_bench.rs)
#   scripts/proxy-bench.sh failover   # clients through proxy mode while real OpenBao nodes are
#                                     # killed and step down: failed requests per failover and the
#                                     # error window (KILLS, STEP_DOWNS, PROBE_INTERVALS;
#                                     # tests/src/bin/proxy_failover.rs)
# Installs wrk from Debian when missing, builds the filter (release, as shipped) and the
# poller. Both binaries only start processes and measure them; the poller only serves state.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cargo build --quiet -p vault-redirect-poller
case ${1:-cpu} in
  cpu)
    if ! command -v wrk >/dev/null; then
      echo "proxy-bench: installing wrk"
      if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
    fi
    cargo run --quiet -p vault-redirect-e2e --bin proxy_bench ;;
  failover)
    cargo run --quiet -p vault-redirect-e2e --bin proxy_failover ;;
  *) echo "usage: scripts/proxy-bench.sh [cpu|failover]" >&2; exit 1 ;;
esac
