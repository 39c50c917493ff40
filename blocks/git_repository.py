"""The Git repository that holds the desired state, as a Prefect block: where it
is, which branch to follow, how to authenticate and which signers to trust.

Secrets (the HTTPS token, the SSH private key) live only in SecretStr fields, so
Prefect stores them as secrets and they never show in a repr or a log line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

if TYPE_CHECKING:
    from prefect_gitops.engine.source.git import GitSource


class GitRepository(Block):
    _block_type_slug = "gitops-git-repository"
    _block_type_name = "GitOps Git Repository"
    _description = (
        "A Git repository holding desired state for prefect-gitops: URL, branch, "
        "HTTPS token or SSH key, and the keys trusted to sign its commits."
    )

    url: str = Field(
        description="https://, ssh://, user@host:path, git://, file:// or a local path. "
        "No credentials in the URL: use the token or SSH key fields."
    )
    branch: str = Field(default="main", description="The branch followed when no revision is given.")
    username: str = Field(default="git", description="HTTPS basic-auth user name sent with the token.")
    token: SecretStr | None = Field(default=None, description="HTTPS token, sent as the basic-auth password.")
    ssh_private_key: SecretStr | None = Field(default=None, description="OpenSSH private key (unencrypted).")
    ssh_known_hosts: str | None = Field(
        default=None,
        description="known_hosts lines for the server; when set, host keys are checked strictly against them.",
    )
    trusted_ssh_signers: list[str] = Field(
        default_factory=list,
        description='allowed_signers lines, e.g. "alice@example.com ssh-ed25519 AAAA...".',
    )
    trusted_gpg_keys: list[str] = Field(default_factory=list, description="ASCII-armored GPG public keys.")
    require_signed_commits: bool = Field(
        default=False, description="Refuse commits not signed by a trusted SSH or GPG key."
    )
    timeout_seconds: float = Field(default=120, gt=0, description="Upper bound for each git command.")

    def source(self) -> GitSource:
        """This repository as the engine takes it."""
        from prefect_gitops.engine.source.git import GitSource  # GitPython, only when Git is used

        return GitSource(url=self.url, branch=self.branch, username=self.username, token=self.token,
                         ssh_private_key=self.ssh_private_key, ssh_known_hosts=self.ssh_known_hosts,
                         trusted_ssh_signers=tuple(self.trusted_ssh_signers),
                         trusted_gpg_keys=tuple(self.trusted_gpg_keys),
                         require_signed_commits=self.require_signed_commits, timeout_seconds=self.timeout_seconds)
