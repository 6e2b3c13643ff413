#!/usr/bin/env bash
# Runs real Envoy with the built filter in the foreground (so the caller stays its parent, as
# Envoy's PR_SET_PDEATHSIG needs).
# Usage: scripts/run-envoy.sh POLLER_HOST:PORT[,HOST:PORT...] LISTEN_PORT [ADMIN_PORT] [extra envoy args...]
# Several comma-separated pollers are replicas in one cluster (health-checked, outlier-ejected).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: run-envoy.sh POLLER_HOST:PORT[,HOST:PORT...] LISTEN_PORT [ADMIN_PORT]"
pollers=${1:?$usage}
listen=${2:?$usage}
admin=${3:-9901}
shift $(( $# < 3 ? $# : 3 ))
source scripts/filter-wasm.sh
wasm=$filter_wasm
[ -f "$wasm" ] || { echo "run-envoy: $wasm is missing; run scripts/build.sh" >&2; exit 1; }
config=${VAULT_REDIRECT_PLUGIN_CONFIG:-'{"poller_cluster":"vault_redirect_poller"}'}
IFS=, read -r -a all <<< "$pollers"
poller=${all[0]}
# The other replicas, one lb_endpoints entry each, indented like the placeholder line.
extra="# (no further poller replicas)"
if (( ${#all[@]} > 1 )); then
  extra=""
  for p in "${all[@]:1}"; do
    [ -n "$extra" ] && extra+="\\n        "
    extra+="- endpoint: { address: { socket_address: { address: \"${p%:*}\", port_value: ${p##*:} } } }"
  done
fi
rendered=$(mktemp --suffix=.yaml)
sed -e "s|{{ADMIN_PORT}}|$admin|" -e "s|{{LISTEN_ADDRESS}}|127.0.0.1|" -e "s|{{LISTEN_PORT}}|$listen|" \
    -e "s|{{WASM_PATH}}|$wasm|" -e "s|{{PLUGIN_CONFIG}}|$config|" \
    -e "s|{{POLLER_HOST}}|${poller%:*}|" -e "s|{{POLLER_PORT}}|${poller##*:}|" \
    -e "s|# {{EXTRA_POLLER_ENDPOINTS}}|$extra|" envoy/envoy.yaml.tmpl > "$rendered"
exec .venv/bin/envoy -c "$rendered" --disable-hot-restart --log-level "${ENVOY_LOG_LEVEL:-info}" "$@"
