#!/usr/bin/env bash
# Debian packages the tests need: git with git-daemon and git-http-backend,
# OpenSSH server and client, GnuPG (the Git source tests, tests/git_remotes.py),
# and PostgreSQL, whose binaries under /usr/lib/postgresql/*/bin (initdb, pg_ctl,
# createdb) start a server of the tests' own (localcluster/fleet.py).
# Idempotent: skips apt entirely when everything is already there. Run as root.
# Installing PostgreSQL creates no cluster (no `main`), so no server starts.
set -euo pipefail

packages=(git openssh-server openssh-client gnupg postgresql)
# postgresql-common reads this directory: without a main cluster, no server to start.
no_main_cluster=/etc/postgresql-common/createcluster.d/zz-prefect-gitops-no-main-cluster.conf

postgres_present() {
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [[ -x $initdb && -x ${initdb%/initdb}/pg_ctl && -x ${initdb%/initdb}/createdb ]] && return 0
    done
    return 1
}

present() {
    command -v git >/dev/null &&
        [[ -x /usr/lib/git-core/git-http-backend && -x /usr/lib/git-core/git-daemon ]] &&
        [[ -x /usr/sbin/sshd ]] &&
        command -v ssh >/dev/null && command -v ssh-keygen >/dev/null &&
        command -v gpg >/dev/null && command -v gpgconf >/dev/null && command -v gpg-agent >/dev/null &&
        postgres_present
}

if present; then
    echo "test dependencies already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
mkdir -p "$(dirname "$no_main_cluster")"
echo "create_main_cluster = false" >"$no_main_cluster"
trap 'rm -f "$no_main_cluster"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
present || { echo "missing test dependencies after install" >&2; exit 1; }
echo "installed: ${packages[*]}"
