#!/usr/bin/env bash
# Debian packages the Git source tests need (tests/git_remotes.py): git with
# git-daemon and git-http-backend, OpenSSH server and client, GnuPG.
# Idempotent: skips apt entirely when everything is already there. Run as root.
set -euo pipefail

packages=(git openssh-server openssh-client gnupg)

present() {
    command -v git >/dev/null &&
        [[ -x /usr/lib/git-core/git-http-backend && -x /usr/lib/git-core/git-daemon ]] &&
        [[ -x /usr/sbin/sshd ]] &&
        command -v ssh >/dev/null && command -v ssh-keygen >/dev/null &&
        command -v gpg >/dev/null && command -v gpgconf >/dev/null && command -v gpg-agent >/dev/null
}

if present; then
    echo "test dependencies already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
present || { echo "missing test dependencies after install" >&2; exit 1; }
echo "installed: ${packages[*]}"
