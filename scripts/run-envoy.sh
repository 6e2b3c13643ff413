#!/usr/bin/env bash
# Runs real Envoy with the built filter in the foreground (so the caller stays its parent, as
# Envoy's PR_SET_PDEATHSIG needs).
# Usage: scripts/run-envoy.sh POLLER_HOST:PORT LISTEN_PORT [ADMIN_PORT] [extra envoy args...]
set -euo pipefail
cd "$(dirname "$0")/.."
poller=${1:?usage: run-envoy.sh POLLER_HOST:PORT LISTEN_PORT [ADMIN_PORT]}
listen=${2:?usage: run-envoy.sh POLLER_HOST:PORT LISTEN_PORT [ADMIN_PORT]}
admin=${3:-9901}
shift $(( $# < 3 ? $# : 3 ))
wasm=$PWD/target/wasm32-wasip1/wasm-release/vault_redirect_filter.wasm
[ -f "$wasm" ] || { echo "run-envoy: $wasm is missing; run scripts/build.sh" >&2; exit 1; }
config=${VAULT_REDIRECT_PLUGIN_CONFIG:-'{"poller_cluster":"vault_redirect_poller"}'}
rendered=$(mktemp --suffix=.yaml)
sed -e "s|{{ADMIN_PORT}}|$admin|" -e "s|{{LISTEN_ADDRESS}}|127.0.0.1|" -e "s|{{LISTEN_PORT}}|$listen|" \
    -e "s|{{WASM_PATH}}|$wasm|" -e "s|{{PLUGIN_CONFIG}}|$config|" \
    -e "s|{{POLLER_HOST}}|${poller%:*}|" -e "s|{{POLLER_PORT}}|${poller##*:}|" envoy/envoy.yaml.tmpl > "$rendered"
exec .venv/bin/envoy -c "$rendered" --disable-hot-restart --log-level "${ENVOY_LOG_LEVEL:-info}" "$@"
