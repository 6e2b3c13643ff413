#!/usr/bin/env bash
# Runs real Envoy with the built filter in the foreground (so the caller stays its parent, as
# Envoy's PR_SET_PDEATHSIG needs).
# Usage: scripts/run-envoy.sh POLLER_HOST:PORT[,HOST:PORT...] LISTEN_PORT [ADMIN_PORT] [extra envoy args...]
# Several comma-separated pollers are replicas in one cluster (health-checked, outlier-ejected).
# VAULT_REDIRECT_MODE=proxy runs envoy/envoy-proxy.yaml.tmpl: Envoy forwards each request to
# the active node instead of answering 307 (the default plugin configuration then says so).
# There, VAULT_CACERT=/path/ca.pem (the variable Vault's own clients read) makes Envoy speak
# TLS to the nodes, trusting only that CA and checking each node's name (the template's
# "#tls " lines).
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
case ${VAULT_REDIRECT_MODE:-redirect} in
  redirect) template=envoy/envoy.yaml.tmpl; mode_field="" ;;
  proxy) template=envoy/envoy-proxy.yaml.tmpl; mode_field=',"mode":"proxy"' ;;
  *) echo "run-envoy: VAULT_REDIRECT_MODE must be redirect or proxy, not $VAULT_REDIRECT_MODE" >&2; exit 1 ;;
esac
# TLS to the Vault nodes: the template's "#tls " lines uncommented, with the CA file.
# tests/src/envoy.rs (upstream_tls) renders them the same way.
tls=()
if [ -n "${VAULT_CACERT:-}" ]; then
  [ "$template" = envoy/envoy-proxy.yaml.tmpl ] ||
    { echo "run-envoy: VAULT_CACERT is for proxy mode (VAULT_REDIRECT_MODE=proxy)" >&2; exit 1; }
  [ -r "$VAULT_CACERT" ] || { echo "run-envoy: VAULT_CACERT=$VAULT_CACERT is not readable" >&2; exit 1; }
  tls=(-e "s|^\( *\)#tls |\1|" -e "s|{{VAULT_CACERT}}|$(realpath "$VAULT_CACERT")|")
fi
config=${VAULT_REDIRECT_PLUGIN_CONFIG:-"{\"poller_cluster\":\"vault_redirect_poller\"$mode_field}"}
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
    -e "s|# {{EXTRA_POLLER_ENDPOINTS}}|$extra|" "${tls[@]}" "$template" > "$rendered"
exec .venv/bin/envoy -c "$rendered" --disable-hot-restart --log-level "${ENVOY_LOG_LEVEL:-info}" "$@"
