"""A real Git remote holding the sample GitOps repository of examples/."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                            env={"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                                 "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
                                 "HOME": str(cwd), "PATH": "/usr/bin:/bin"})
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {result.stderr}")
    return result.stdout.strip()


@dataclass
class ExampleRepo:
    bare: Path
    work: Path
    block_name: str

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (or, for None, delete) files, commit and push; the new SHA."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", "main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def git_pull(self) -> None:
        git("pull", "--quiet", "--rebase", "origin", "main", cwd=self.work)

    def log(self) -> list[str]:
        """Full messages of the commits on main, newest first."""
        return git("log", "--format=%B%x00", cwd=self.work).strip("\x00\n").split("\x00")

    def read(self, name: str) -> str:
        return (self.work / name).read_text()


def make_example_repo(root: Path, name_prefix: str) -> ExampleRepo:
    """examples/ committed to a bare repository under root, saved as a Git repository block."""
    from prefect_gitops.blocks import GitRepository

    bare, work = root / "examples.git", root / "work"
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=root)
    shutil.copytree(EXAMPLES, work)
    git("init", "--quiet", "-b", "main", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    repo = ExampleRepo(bare, work, f"{name_prefix}-{secrets.token_hex(3)}")
    repo.commit({}, "the sample repository")
    GitRepository(url=f"file://{bare}", branch="main").save(repo.block_name, overwrite=True)
    return repo


def synced_example_repo(root: Path, name_prefix: str, clusters: dict):
    """make_example_repo, synced once to every cluster; yields it, then removes
    what the sync created (for module fixtures)."""
    from prefect_gitops.flows.sync import gitops_sync

    repo = make_example_repo(root, name_prefix)
    report = gitops_sync(repo=repo.block_name)
    assert report.ok, report.failure_message()
    yield repo
    remove_sample_apps(*clusters.values())


def remove_sample_apps(*clusters) -> None:
    """What a sync of the sample repository created, gone from each cluster: the
    next test starts clean. The namespaces of all clusters are deleted at once."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(clusters))) as pool:
        list(pool.map(_remove_sample_apps, clusters))


SAMPLE_NAMESPACES = ("web", "widgets", "gitops-system")


def _remove_sample_apps(cluster) -> None:
    from conftest import kubectl

    # Pods first, so that the namespace controller finds none still terminating
    # (it would come back only after half their grace period, 15 s).
    for namespace in SAMPLE_NAMESPACES:
        kubectl(cluster.kubeconfig, "delete", "deployment", "--all", "-n", namespace, "--cascade=foreground",
                "--wait=true", "--timeout=60s", check=False)
    kubectl(cluster.kubeconfig, "delete", "namespace", *SAMPLE_NAMESPACES, "--ignore-not-found",
            "--wait=true", "--timeout=60s", check=False)
    kubectl(cluster.kubeconfig, "delete", "crd", "widgets.example.com", "--ignore-not-found", check=False)


@pytest.fixture
def example_repo(tmp_path, prefect_api) -> ExampleRepo:
    """examples/ committed to a bare repository, saved as a Git repository block."""
    return make_example_repo(tmp_path, "examples")
