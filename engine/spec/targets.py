"""Which app goes to which cluster: the (app, cluster) pairs a run works on, in
dependsOn order, and the problems of the selection (unknown app or cluster)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.problems import Problem, Severity
from prefect_gitops.engine.spec.appspec import App, AppSpec


@dataclass
class Target:
    """One app for one cluster, with what it renders to and what is wrong with it."""

    app: App
    cluster: str
    manifests: list[Manifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.app.name}@{self.cluster}"

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]


def select_targets(spec: AppSpec, cluster_labels: dict[str, dict[str, str]],
                   apps: list[str] | None, clusters: list[str] | None) -> tuple[list[Target], list[Problem]]:
    """The (app, cluster) pairs to work on, apps in dependsOn order."""
    problems = list(spec.target_problems(cluster_labels))
    known_apps = {a.name for a in spec.apps}
    for name in sorted(set(apps or []) - known_apps):
        problems.append(Problem(Source("gitops.yaml"), "", "select.unknown-app",
                                f"no app named {name!r} in gitops.yaml (apps: {', '.join(sorted(known_apps))})"))
    for name in sorted(set(clusters or []) - set(cluster_labels)):
        problems.append(Problem(Source("gitops.yaml"), "", "select.unknown-cluster",
                                f"no saved cluster named {name!r} (add it with `gitops cluster add`)"))
    pairs = spec.targets(cluster_labels)
    rank = {app.name: i for i, app in enumerate(spec.ordered_apps())}
    selected = [
        Target(app, cluster) for app, cluster in sorted(pairs, key=lambda p: (rank[p[0].name], p[1]))
        if (not apps or app.name in apps) and (not clusters or cluster in clusters)
    ]
    return selected, problems


def dependencies(spec: AppSpec, app: App) -> set[str]:
    """The names of every app `app` depends on, directly or not."""
    found, pending = set(), list(app.depends_on)
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending.extend(spec.app(name).depends_on)
    return found


def provided_by_dependencies(spec: AppSpec, target: Target, targets: list[Target]) -> list[Manifest]:
    """What the apps `target` depends on apply before it on the same cluster."""
    needs = dependencies(spec, target.app)
    return [m for t in targets if t.cluster == target.cluster and t.app.name in needs for m in t.manifests]
