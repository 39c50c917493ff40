#!/usr/bin/env bash
# Install helm (for `helm template`) into ~/go/bin with the Go toolchain, once.
# Idempotent: does nothing when helm is already on PATH or in ~/go/bin.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
GOBIN_DIR="${HOME}/go/bin"

if command -v helm >/dev/null 2>&1; then
    echo "helm already on PATH: $(command -v helm)"
    exit 0
fi
if [ -x "${GOBIN_DIR}/helm" ]; then
    echo "helm already installed: ${GOBIN_DIR}/helm"
    exit 0
fi

GO="$(command -v go || true)"
if [ -z "${GO}" ] && [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
fi
if [ -z "${GO}" ]; then
    echo "go is not installed; cannot build helm" >&2
    exit 1
fi

echo "building helm ${HELM_VERSION} into ${GOBIN_DIR} (takes a few minutes)"
GOFLAGS=-mod=mod GOBIN="${GOBIN_DIR}" "${GO}" install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
"${GOBIN_DIR}/helm" version --short
