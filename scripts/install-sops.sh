#!/usr/bin/env bash
# Install sops (decrypts SOPS-encrypted manifests at render time) and age-keygen
# (makes the age keys of the tests) into ~/go/bin with the Go toolchain, once.
# Idempotent: skips each tool already on PATH or in ~/go/bin.
set -euo pipefail

SOPS_VERSION="${SOPS_VERSION:-v3.13.3}"
AGE_VERSION="${AGE_VERSION:-v1.3.1}"  # the age sops itself is built with
GOBIN_DIR="${HOME}/go/bin"

GO="$(command -v go || true)"
if [ -z "${GO}" ] && [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
fi

install_tool() {  # NAME PACKAGE@VERSION
    local name="$1" package="$2"
    if command -v "${name}" >/dev/null 2>&1; then
        echo "${name} already on PATH: $(command -v "${name}")"
        return
    fi
    if [ -x "${GOBIN_DIR}/${name}" ]; then
        echo "${name} already installed: ${GOBIN_DIR}/${name}"
        return
    fi
    if [ -z "${GO}" ]; then
        echo "go is not installed; cannot build ${name}" >&2
        exit 1
    fi
    echo "building ${package} into ${GOBIN_DIR}"
    GOFLAGS=-mod=mod GOBIN="${GOBIN_DIR}" "${GO}" install "${package}"
}

install_tool sops "github.com/getsops/sops/v3/cmd/sops@${SOPS_VERSION}"
install_tool age-keygen "filippo.io/age/cmd/age-keygen@${AGE_VERSION}"
