"""What the runs of one sync share: the repository at one revision, the app
spec, the saved clusters and one KubeClient per cluster, and the targets with
what they rendered to. A sync flow opens one; the app-and-cluster runs it starts
find it through `current()`, a context variable that the sync's cluster
threads copy."""

from __future__ import annotations

import contextlib
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from prefect_gitops.engine.cluster.kube import KubeClient, service_account_user
from prefect_gitops.engine.cluster.kubeconfig import Cluster
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.problems import Problem, ProblemsFound
from prefect_gitops.engine.report import TargetResult
from prefect_gitops.engine.source import render_cache
from prefect_gitops.engine.source.git import GitSource
from prefect_gitops.engine.source.render import RenderOptions, render_app
from prefect_gitops.engine.spec.appspec import App, AppSpec, load_appspec
from prefect_gitops.engine.spec.targets import Target, select_targets
from prefect_gitops.engine.state.inventory import Inventory
from prefect_gitops.engine.validation.impersonation import impersonation_problems

_CURRENT: ContextVar["Workspace | None"] = ContextVar("gitops_workspace", default=None)


@dataclass
class Workspace:
    repo_name: str
    repo: GitSource
    revision: str
    tree: Path
    spec: AppSpec
    clusters: dict[str, Cluster]
    # fetch(revision) -> tree: how another revision is checked out (a revert renders the last healthy one)
    checkout: Callable[[str], Path]
    # how an app is rendered (its age key, when it decrypts): blocks/decryption.py
    render_options: Callable[[App], RenderOptions]
    targets: list[Target] = field(default_factory=list)
    results: dict[tuple[str, str], TargetResult] = field(default_factory=dict)
    # The inventory of an app as it was before its sync, for a revert to undo just that sync.
    before: dict[tuple[str, str], Inventory | None] = field(default_factory=dict)
    _kubes: dict[str, KubeClient] = field(default_factory=dict)
    _trees: dict[str, Path] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, repo_name: str, repo: GitSource, revision: str, tree: Path, clusters: dict[str, Cluster],
             checkout: Callable[[str], Path], render_options: Callable[[App], RenderOptions]) -> "Workspace":
        """Raises ProblemsFound when gitops.yaml is invalid."""
        return cls(repo_name, repo, revision, tree, load_appspec(tree), clusters, checkout, render_options)

    def select(self, apps: list[str] | None, clusters: list[str] | None) -> list[Problem]:
        self.targets, problems = select_targets(self.spec, {n: b.labels for n, b in self.clusters.items()},
                                                apps, clusters)
        return problems

    def target(self, app: str, cluster: str) -> Target:
        for target in self.targets:
            if (target.app.name, target.cluster) == (app, cluster):
                return target
        target = Target(self.spec.app(app), cluster)  # e.g. a revert of an app not selected
        self.targets.append(target)
        return target

    def kube(self, cluster: str) -> KubeClient:
        with self._lock:
            if cluster not in self._kubes:
                self._kubes[cluster] = KubeClient.for_cluster(self.clusters[cluster])
            return self._kubes[cluster]

    def kube_for(self, app: App, cluster: str) -> KubeClient:
        """The client for the work of `app` on `cluster` (dry-runs, apply, prune,
        health and drift reads): the cluster's, impersonating the app's
        serviceAccountName when it names one, so that the cluster's RBAC decides.
        Raises ProblemsFound when the cluster requires impersonation and the app
        names no account.

        The app's inventory and Lease in gitops-system are the engine's own
        bookkeeping, as Argo CD's and Flux's are the controller's: they are read
        and written with kube(), and a tenant needs no access to that namespace
        (where it could rewrite another app's inventory)."""
        problems = self.fence_problems(app, cluster)
        if problems:
            raise ProblemsFound(problems)
        kube = self.kube(cluster)
        if not app.service_account_name:
            return kube
        return kube.impersonating(service_account_user(app.namespace, app.service_account_name))

    def fence_problems(self, app: App, cluster: str) -> list[Problem]:
        """Why `cluster` refuses `app` (it requires impersonation and the app names no account)."""
        return impersonation_problems(app, cluster, self.clusters[cluster].require_impersonation)

    def tree_at(self, revision: str) -> Path:
        if revision == self.revision:
            return self.tree
        with self._lock:
            if revision not in self._trees:
                self._trees[revision] = self.checkout(revision)
            return self._trees[revision]

    def rendered(self, app: App, cluster: str, revision: str) -> list[Manifest]:
        """The app's manifests for a cluster at a revision: from the render cache,
        or rendered now (offline, unvalidated) and cached. Raises ProblemsFound."""
        return render_cache.rendered(revision, app, cluster,
                                     lambda: render_app(self.tree_at(revision), app, cluster, self.render_options(app)))

    def close(self) -> None:
        for kube in self._kubes.values():
            kube.close()
        self._kubes.clear()


def current() -> Workspace | None:
    return _CURRENT.get()


@contextlib.contextmanager
def opened(workspace: Workspace) -> Iterator[Workspace]:
    """Make `workspace` the current one for this context; close its clients at the end."""
    token = _CURRENT.set(workspace)
    try:
        yield workspace
    finally:
        _CURRENT.reset(token)
        workspace.close()
