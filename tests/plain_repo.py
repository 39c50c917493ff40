"""A real Git remote of plain-YAML apps that a test writes itself (gitops.yaml
included), saved as a Git repository block; the manifests tests write into it;
and what they read back through Prefect's REST API (flow runs by name, events)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from example_repo import ExampleRepo, git
from test_prefect_view import gitops_events
from test_recovery import api_post

EVENTS_WAIT_S = 60  # events reach the server's database in batches


def make_plain_repo(root: Path, name_prefix: str, files: dict[str, str]) -> ExampleRepo:
    """`files` committed to a bare repository under root, saved as a Git repository block."""
    from prefect_gitops.blocks import GitRepository

    repo = empty_repo(root, f"{name_prefix}-{secrets.token_hex(3)}")
    repo.commit(files, "the apps")
    GitRepository(url=f"file://{repo.bare}", branch="main").save(repo.block_name, overwrite=True)
    return repo


def empty_repo(root: Path, block_name: str) -> ExampleRepo:
    """A bare repository under root and a working copy pushing to it, nothing committed."""
    bare, work = root / "plain.git", root / "work"
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=root)
    work.mkdir()
    git("init", "--quiet", "-b", "main", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    return ExampleRepo(bare, work, block_name)


def remote_head(repo: ExampleRepo) -> str:
    """The branch head in the remote itself (what a revert commit would move)."""
    return git("rev-parse", "main", cwd=repo.bare)


def gitops_yaml(*apps: dict) -> str:
    return yaml.safe_dump({"apps": list(apps)}, sort_keys=False)


def configmap(name: str, *, namespace: str | None = None, **data: str) -> str:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})


def namespace_object(name: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def secret(name: str, **values: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
                           "stringData": values})


def configmap_quota(count: int) -> str:
    """At most `count` ConfigMaps in the namespace, kube-root-ca.crt included."""
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "configmaps"},
                           "spec": {"hard": {"count/configmaps": str(count)}}})


def deployment(name: str, image: str = "nginx:1.27", paused: bool = False) -> str:
    """One replica; `paused` from its creation, it never rolls out (InProgress until
    the health timeout); an image on unreachable.invalid fails fast (ErrImagePull)."""
    labels = {"app": name}
    spec = {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "main", "image": image, "resources": {"limits": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    if paused:
        spec = {"paused": True, **spec}
    return yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec})


def forget_apps(cluster, *apps: str) -> None:
    """The engine's bookkeeping of these apps (inventory, Lease) gone from the cluster."""
    from conftest import kubectl

    kubectl(cluster.kubeconfig, "delete", "-n", "gitops-system", "--ignore-not-found",
            *[f"{kind}/{prefix}-{app}" for app in apps
              for kind, prefix in (("configmap", "gitops-app"), ("lease", "gitops-sync"))], check=False)


def now() -> datetime:
    return datetime.now(timezone.utc)


def flow_run_named(api: str, name: str) -> dict:
    """The one flow run of that name (names carry a revision, unique to a test)."""
    [run] = api_post(api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [name]}}})
    return run


def state_of(run: dict) -> tuple[str, str]:
    return run["state"]["type"], run["state"]["name"]


def wait_for_events(api: str, since: datetime, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (event, prefect.resource.name) pairs of gitops events since `since`,
    once every wanted pair is among them, or when EVENTS_WAIT_S have passed."""
    deadline = time.monotonic() + EVENTS_WAIT_S
    while True:
        found = {(e["event"], e["resource"].get("prefect.resource.name")) for e in gitops_events(api, since, now())}
        if wanted <= found or time.monotonic() > deadline:
            return found
        time.sleep(1)
