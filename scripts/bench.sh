#!/usr/bin/env bash
# The side-by-side benchmark (docs/BENCHMARKS.md): not part of the test command.
# Installs its own tools when missing (wrk from Debian, vault-redirector 0.2.0 in .venv-bench),
# builds release artifacts, and prints a Markdown report. BENCH_SECONDS sets the load time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
fi
if [ ! -x .venv-bench/bin/vault-redirector ]; then
  echo "bench: installing vault-redirector 0.2.0 into .venv-bench"
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet --disable-pip-version-check "vault-redirector==0.2.0"
fi
scripts/build.sh
cargo build --quiet --release -p vault-redirect-poller
cargo run --quiet --release -p vault-redirect-e2e --bin bench
