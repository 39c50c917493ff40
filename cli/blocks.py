"""`gitops repo ...` and `gitops cluster ...`: the Git repositories and the
clusters that prefect-gitops knows, saved as Prefect blocks (secrets masked
in the Prefect UI and API)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from prefect_gitops.cli.console import err, error
from prefect_gitops.cli.tables import print_table

# The slugs of blocks/ (a test keeps them equal): the lists read the blocks
# through the REST API, without importing Prefect (2-3 s) nor fetching secrets.
REPO_SLUG, CLUSTER_SLUG = "gitops-git-repository", "gitops-kubernetes-cluster"

repo_app = typer.Typer(help="Git repositories holding desired state (Prefect blocks).", no_args_is_help=True)
cluster_app = typer.Typer(help="Kubernetes clusters to sync to (Prefect blocks).", no_args_is_help=True)


@repo_app.command("add")
def repo_add(
    name: str = typer.Argument(..., help="Block name."),
    url: str = typer.Option(..., "--url", help="https://, ssh://, git://, file:// URL or a local path."),
    branch: str = typer.Option("main", "--branch", help="The branch to track."),
    token_env: str | None = typer.Option(None, "--token-env", help="Read an HTTPS token from this environment variable."),
    ssh_key: Path | None = typer.Option(None, "--ssh-key", help="SSH private key file.", exists=True, dir_okay=False),
    known_hosts: Path | None = typer.Option(None, "--known-hosts", help="known_hosts file for SSH.", exists=True,
                                            dir_okay=False),
) -> None:
    """Save a Git repository block. Secrets are read from a variable or a file, never from the command line."""
    from pydantic import SecretStr

    from prefect_gitops.blocks import GitRepository

    if token_env and ssh_key:
        _fail("give either --token-env or --ssh-key, not both")
    token = None
    if token_env:
        if not os.environ.get(token_env):
            _fail(f"environment variable {token_env} is empty or not set")
        token = SecretStr(os.environ[token_env])
    block = GitRepository(
        url=url,
        branch=branch,
        token=token,
        ssh_private_key=SecretStr(ssh_key.read_text()) if ssh_key else None,
        ssh_known_hosts=known_hosts.read_text() if known_hosts else None,
    )
    block.save(name, overwrite=True)
    err.print(f"saved Git repository block [bold]{escape(name)}[/bold] ({escape(block.url)}, branch {branch})")


@repo_app.command("list")
def repo_list() -> None:
    """List saved Git repository blocks."""
    table = Table("name", "url", "branch", "credentials")
    for document in _saved(REPO_SLUG):
        data = document["data"]  # a secret that is set reads `********`, one that is not null
        credentials = "token" if data.get("token") else "ssh key" if data.get("ssh_private_key") else "none"
        table.add_row(escape(document["name"]), escape(data.get("url", "")), escape(data.get("branch", "")),
                      credentials)
    print_table(table)


@cluster_app.command("add")
def cluster_add(
    name: str = typer.Argument(..., help="Block name (what gitops.yaml targets)."),
    kubeconfig: Path = typer.Option(..., "--kubeconfig", exists=True, dir_okay=False, help="kubeconfig file."),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context; its current one by default."),
    label: list[str] = typer.Option([], "--label", help="k=v, repeatable; apps select clusters by label."),
    require_impersonation: bool = typer.Option(
        False, "--require-impersonation",
        help="Every app synced here must name a serviceAccountName, whose RBAC then fences it."),
) -> None:
    """Save a Kubernetes cluster block; its kubeconfig is stored as a secret."""
    save_cluster(name, kubeconfig, context, parse_labels(label), require_impersonation)
    err.print(f"saved Kubernetes cluster block [bold]{escape(name)}[/bold]")


@cluster_app.command("list")
def cluster_list() -> None:
    """List saved Kubernetes cluster blocks."""
    table = Table("name", "context", "labels", "impersonation")
    for document in _saved(CLUSTER_SLUG):
        data = document["data"]
        labels = ", ".join(f"{k}={v}" for k, v in sorted((data.get("labels") or {}).items()))
        table.add_row(escape(document["name"]), escape(data.get("context") or "(current)"), escape(labels),
                      "required" if data.get("require_impersonation") else "")
    print_table(table)


def save_cluster(name: str, kubeconfig: Path, context: str | None = None, labels: dict[str, str] | None = None,
                 require_impersonation: bool = False):
    from prefect_gitops.blocks import KubernetesCluster
    from prefect_gitops.engine.cluster.kubeconfig import KubeconfigError

    try:  # refused before anything is saved; no request is sent
        block = KubernetesCluster.from_kubeconfig_file(kubeconfig, context=context, labels=labels or {},
                                                       require_impersonation=require_impersonation)
    except KubeconfigError as refused:
        error(f"{kubeconfig}: {refused}")
        raise typer.Exit(2)
    block.save(name, overwrite=True)
    return block


def _saved(block_type_slug: str) -> list[dict]:
    from prefect_gitops.cli.prefect_api import PrefectApiError, prefect_api

    try:
        return prefect_api().block_documents(block_type_slug)
    except PrefectApiError as failed:
        _fail(str(failed))


def parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--label {pair!r}: expected key=value")
        labels[key] = value
    return labels


def _fail(message: str) -> None:
    error(message)
    raise typer.Exit(2)
