#!/usr/bin/env bash
# Builds what a user downloads and deploys into target/dist/ (docs/install.md says how each
# piece is used):
#   vault-redirect-poller-<version>-<arch>-linux-musl   static poller binaries
#   vault_redirect_filter.wasm                         the filter Envoy loads
#   oci/filter   OCI image layout of the filter, in the Wasm image format Istio's WasmPlugin
#                pulls (the "compat" variant: one tar+gzip layer holding plugin.wasm)
#   oci/poller   OCI image layout of the poller: from scratch, static binary, CA bundle,
#                non-root user; an image index over one manifest per architecture
#   k8s/         deploy/k8s with both images named by tag and digest
#   SHA256SUMS   every file above
# No container daemon: layers are tar archives written here, umoci assembles the layouts.
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: the commit's time) and source
# paths in the binaries are remapped, so one commit gives the same digests on every run.
#
# Environment: VAULT_REDIRECT_ARCHES (default "x86_64 aarch64"), VAULT_REDIRECT_DIST (default
# target/dist), VAULT_REDIRECT_REGISTRY (where the k8s manifests say the images live; default
# registry.example.com/vault-redirect), SOURCE_DATE_EPOCH, VAULT_REDIRECT_POLLER_PROFILE (the
# cargo profile of the pollers: release-stripped, what ships; scripts/test.sh packages a
# release-check build, which it only inspects and runs, in a fraction of the build time),
# VAULT_REDIRECT_POLLER_TARGET_DIR (cargo's target directory for the pollers only; test.sh
# builds them beside its own build, in a directory of their own so neither waits on the
# other's lock), VAULT_REDIRECT_FILTER_BUILT=1 (package the shipped .wasm as it is, without
# building it first).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

arches=${VAULT_REDIRECT_ARCHES:-x86_64 aarch64}
profile=${VAULT_REDIRECT_POLLER_PROFILE:-release-stripped}
poller_target_dir=${VAULT_REDIRECT_POLLER_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}
dist=${VAULT_REDIRECT_DIST:-target/dist}
registry=${VAULT_REDIRECT_REGISTRY:-registry.example.com/vault-redirect}
# Where scripts/build.sh leaves the shipped filter ($filter_wasm).
source scripts/filter-wasm.sh
scripts/setup.sh --release

for tool in umoci jq sha256sum tar; do
  command -v "$tool" >/dev/null || { echo "release: $tool missing: run scripts/setup.sh" >&2; exit 1; }
done

# The version lives in the workspace's Cargo.toml only; Cargo reads it for us.
version=$(cargo metadata --no-deps --format-version 1 \
  | jq -r '.packages[] | select(.name == "vault-redirect-poller") | .version')
# The commit goes into --version (poller/build.rs) and the image labels; -dirty when the
# tracked files differ from it, so a release never claims a commit it was not built from.
if commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  [ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit-dirty"
  : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
else
  commit=unknown
  : "${SOURCE_DATE_EPOCH:=0}"
fi
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
echo "release: vault-redirect $version (commit $commit) into $dist"

# Only ever remove an earlier release (or an empty directory), whatever VAULT_REDIRECT_DIST says.
if [ -e "$dist" ] && [ -n "$(ls -A "$dist")" ] && [ ! -d "$dist/oci" ]; then
  echo "release: $dist holds something other than a release; not removing it" >&2
  exit 1
fi
rm -rf "$dist"
mkdir -p "$dist/oci" "$dist/k8s"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The filter: scripts/build.sh builds the module Envoy loads (cargo, then wasm-opt), unless the
# caller just did (VAULT_REDIRECT_FILTER_BUILT=1: scripts/test.sh, whose cargo holds the
# target directory's lock while this runs beside it).
[ "${VAULT_REDIRECT_FILTER_BUILT:-}" = 1 ] || scripts/build.sh filter
[ -f "$filter_wasm" ] || { echo "release: $filter_wasm is missing" >&2; exit 1; }
cp "$filter_wasm" "$dist/vault_redirect_filter.wasm"

# Rust target, OCI architecture, and the C cross compiler (ring's C and assembly) per arch.
# aarch64 links with Debian's gcc-aarch64-linux-gnu against the musl that Rust's
# aarch64-unknown-linux-musl target ships (self-contained), so no musl for arm64 is needed.
declare -A rust_target=([x86_64]=x86_64-unknown-linux-musl [aarch64]=aarch64-unknown-linux-musl)
declare -A oci_arch=([x86_64]=amd64 [aarch64]=arm64)
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar

# Rust writes source paths into the binary (panic locations); mapped to fixed names, the
# checkout's and Cargo's home directories do not change the bytes from machine to machine.
rustflags="${RUSTFLAGS:-} --remap-path-prefix=$PWD=/vault-redirect"
rustflags+=" --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"

installed_targets=$(rustup target list --installed)
for arch in $arches; do
  target=${rust_target[$arch]:-}
  [ -n "$target" ] || { echo "release: unknown arch $arch (x86_64, aarch64)" >&2; exit 1; }
  grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
  # Only this build gets the commit from here: the dev builds (scripts/build.sh) take it
  # from git, so they do not rebuild each time the two disagree on -dirty.
  VAULT_REDIRECT_GIT_COMMIT=$commit RUSTFLAGS=$rustflags \
    cargo build --quiet --profile "$profile" -p vault-redirect-poller --target "$target" \
      --target-dir "$poller_target_dir"
  cp "$poller_target_dir/$target/$profile/vault-redirect-poller" \
    "$dist/vault-redirect-poller-$version-$arch-linux-musl"
done

# One layer from a directory: a tar with fixed order, owners and times, so its digest (and
# that of umoci's compression of it) depends on the content only.
layer() { # DIR OUT.tar
  (cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/top"
  tar --create --file "$2" --directory "$1" --sort=name --format=gnu \
    --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --files-from "$work/top"
}
# An image from one layer; umoci compresses the layer as given.
image() { # LAYOUT:TAG LAYER.tar umoci-config-args...
  local ref=$1 tar=$2
  shift 2
  umoci new --image "$ref"
  umoci raw add-layer --image "$ref" --history.created "$created" \
    --history.created_by "scripts/release.sh" "$tar"
  umoci config --image "$ref" --no-history --created "$created" "$@"
}
digest_of() { # LAYOUT TAG
  jq -r --arg tag "$2" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag) | .digest' \
    "$1/index.json"
}
labels=(--config.label "org.opencontainers.image.version=$version"
  --config.label "org.opencontainers.image.revision=$commit"
  --config.label "org.opencontainers.image.licenses=MPL-2.0")

# The filter image, in the Wasm image "compat" variant that Istio's WasmPlugin pulls
# (istio pkg/wasm/imagefetcher.go): the last layer is application/vnd.oci.image.layer.v1.tar+gzip
# and holds plugin.wasm; the manifest says so with module.wasm.image/variant=compat.
mkdir -p "$work/filter"
install -m 0644 "$dist/vault_redirect_filter.wasm" "$work/filter/plugin.wasm"
layer "$work/filter" "$work/filter.tar"
umoci init --layout "$dist/oci/filter"
image "$dist/oci/filter:$version" "$work/filter.tar" --os wasip1 --architecture wasm \
  --manifest.annotation module.wasm.image/variant=compat "${labels[@]}" \
  --config.label "org.opencontainers.image.title=vault-redirect filter"
umoci gc --layout "$dist/oci/filter"

# The poller image, one manifest per architecture: the static binary, the CA bundle for TLS
# to Consul, Vault and Kubernetes, and a non-root user (65532, as in deploy/k8s), from scratch.
umoci init --layout "$dist/oci/poller"
for arch in $arches; do
  root="$work/poller-$arch"
  install -d -m 0755 "$root/etc/ssl/certs" "$root/usr/local/bin"
  install -m 0755 "$dist/vault-redirect-poller-$version-$arch-linux-musl" \
    "$root/usr/local/bin/vault-redirect-poller"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/:/sbin/nologin\nvault-redirect:x:65532:65532:vault-redirect:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nvault-redirect:x:65532:\n' >"$root/etc/group"
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
  layer "$root" "$work/poller-$arch.tar"
  # The default flags listen where other pods reach it; arguments given to the container
  # (Kubernetes args) replace them, so deploy/k8s repeats --listen.
  image "$dist/oci/poller:$version-${oci_arch[$arch]}" "$work/poller-$arch.tar" \
    --os linux --architecture "${oci_arch[$arch]}" --config.user 65532:65532 \
    --config.entrypoint /usr/local/bin/vault-redirect-poller \
    --config.cmd --listen --config.cmd 0.0.0.0:8210 --config.exposedports 8210/tcp \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "${labels[@]}" \
    --config.label "org.opencontainers.image.title=vault-redirect poller"
done
umoci gc --layout "$dist/oci/poller"
# The tag <version> names an image index over the per-architecture manifests, so one
# reference pulls the right binary on amd64 and arm64 nodes (umoci writes no indexes: jq does).
poller_layout="$dist/oci/poller"
manifests=()
for arch in $arches; do
  manifests+=("$(jq -c --arg tag "$version-${oci_arch[$arch]}" --arg arch "${oci_arch[$arch]}" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag)
      | {mediaType, digest, size, platform: {architecture: $arch, os: "linux"}}' \
    "$poller_layout/index.json")")
done
index=$(printf '%s\n' "${manifests[@]}" | jq -cs \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: .}')
index_hex=$(printf '%s' "$index" | sha256sum | cut -d' ' -f1)
printf '%s' "$index" >"$poller_layout/blobs/sha256/$index_hex"
jq -c --arg v "$version" --arg d "sha256:$index_hex" --argjson size "${#index}" \
  '.manifests += [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d,
     size: $size, annotations: {"org.opencontainers.image.ref.name": $v}}]' \
  "$poller_layout/index.json" >"$work/index.json"
mv "$work/index.json" "$poller_layout/index.json"
chmod -R a+rX "$dist/oci"

# deploy/k8s with the images by tag and digest: the digests exist only once built, and the
# commit they embed changes with every commit, so the committed manifests name the tag only.
filter_ref="$registry/filter:$version@$(digest_of "$dist/oci/filter" "$version")"
poller_ref="$registry/poller:$version@$(digest_of "$poller_layout" "$version")"
sed -E "s#^( +image: ).*/poller(:[^ ]*)?\$#\1$poller_ref#" deploy/k8s/poller.yaml \
  >"$dist/k8s/poller.yaml"
sed -E "s#^( *url: oci://).*/filter(:[^ ]*)?\$#\1$filter_ref#" deploy/k8s/wasmplugin.yaml \
  >"$dist/k8s/wasmplugin.yaml"
cp deploy/k8s/destinationrule.yaml "$dist/k8s/"
grep -q "$poller_ref" "$dist/k8s/poller.yaml" && grep -q "$filter_ref" "$dist/k8s/wasmplugin.yaml" \
  || { echo "release: deploy/k8s has no image/url line to rewrite" >&2; exit 1; }

(cd "$dist" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort \
  | xargs sha256sum >SHA256SUMS)

echo "release: done in $(($(date +%s) - start)) s"
(cd "$dist" && ls -l vault-redirect-poller-* vault_redirect_filter.wasm && du -sh oci/*)
echo "release: poller image $poller_ref"
echo "release: filter image oci://$filter_ref"
