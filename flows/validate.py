"""`gitops_validate`: the first half of the pipeline. Fetch one revision, render
every app for each cluster it targets, and validate the result: structure,
schema, policy, and a server-side dry-run against each target cluster.

Nothing is written to any cluster. Every problem of every app and cluster is
collected and reported together; the run fails if any is an error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks import GitRepository, KubernetesCluster
from blocks.registry import load_clusters
from engine.appspec import App, AppSpec, load_appspec
from engine.git import fetch_task
from engine.objects import Manifest, Source
from engine.problems import Problem, ProblemsFound, Severity
from engine.render import render_app_task
from engine.validate import validate_desired_state


@dataclass
class Target:
    """One app rendered for one cluster."""

    app: App
    cluster: str
    manifests: list[Manifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class DesiredState:
    revision: str
    tree: Path
    spec: AppSpec
    targets: list[Target]
    problems: list[Problem]  # about the spec or the selection, not one target
    clusters: dict[str, KubernetesCluster] = field(default_factory=dict)  # every saved cluster, by name

    def all_problems(self) -> list[Problem]:
        return self.problems + [p for t in self.targets for p in t.problems]

    def errors(self) -> list[Problem]:
        return [p for p in self.all_problems() if p.severity is Severity.ERROR]


class ValidationFailed(ProblemsFound):
    """Raised by the flow when any problem is an error; carries what was found."""

    def __init__(self, desired: DesiredState):
        super().__init__(desired.all_problems())
        self.desired = desired


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


def check_target(tree: Path, target: Target, cluster: KubernetesCluster | None,
                 provided: list[Manifest], kubernetes_version: str | None = None) -> None:
    """Render and validate one target, keeping every problem on it. `provided`:
    what the apps it depends on apply before it on the same cluster."""
    try:
        target.manifests = render_app_task(tree, target.app, target.cluster)
    except ProblemsFound as found:
        target.problems = found.problems
        return
    app = target.app
    try:
        target.problems = validate_desired_state(target.manifests, app.name, app.namespace, app.policy, cluster,
                                                 kubernetes_version, provided=provided)
    except ProblemsFound as found:
        target.problems = found.problems


def prepare_desired_state(repo: str, apps: list[str] | None, clusters: list[str] | None,
                          revision: str | None, server_dry_run: bool,
                          cluster_blocks: dict[str, KubernetesCluster] | None = None) -> DesiredState:
    """Fetch once, then render and validate every selected app for each of its clusters.
    `cluster_blocks`: the saved clusters, when the caller has loaded them already."""
    logger = get_run_logger()
    fetched = fetch_task(GitRepository.load(repo), revision)
    spec = load_appspec(fetched.tree)
    cluster_blocks = load_clusters() if cluster_blocks is None else cluster_blocks
    targets, problems = select_targets(spec, {n: b.labels for n, b in cluster_blocks.items()}, apps, clusters)
    state = DesiredState(fetched.sha, fetched.tree, spec, targets, problems, cluster_blocks)
    versions: dict[str, str] = {}  # asked once per cluster, not once per app
    for target in targets:
        provided = [m for t in targets if t.cluster == target.cluster and t.app.name in dependencies(spec, target.app)
                    for m in t.manifests]
        block = cluster_blocks[target.cluster] if server_dry_run else None
        if block is not None and target.cluster not in versions:
            versions[target.cluster] = block.server_version()
        check_target(fetched.tree, target, block, provided, versions.get(target.cluster))
        logger.info("%s on %s: %d objects, %d problems", target.app.name, target.cluster,
                    len(target.manifests), len(target.problems))
    return state


@flow(name="gitops-validate", log_prints=False)
def gitops_validate(repo: str, apps: list[str] | None = None, clusters: list[str] | None = None,
                    revision: str | None = None, server_dry_run: bool = True) -> DesiredState:
    """Fetch, render and validate without writing anywhere. Fails listing every error."""
    state = prepare_desired_state(repo, apps, clusters, revision, server_dry_run)
    create_markdown_artifact(key="gitops-validate", markdown=problems_markdown(state),
                             description=f"validation of {state.revision[:12]}")
    if state.errors():
        raise ValidationFailed(state)
    return state


def dependencies(spec: AppSpec, app: App) -> set[str]:
    """The names of every app `app` depends on, directly or not."""
    found, pending = set(), list(app.depends_on)
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending.extend(spec.app(name).depends_on)
    return found


def problems_markdown(state: DesiredState) -> str:
    lines = [f"# Validation of `{state.revision[:12]}`", "",
             "| app | cluster | objects | errors | warnings |", "|---|---|---|---|---|"]
    for t in state.targets:
        errors = sum(p.severity is Severity.ERROR for p in t.problems)
        lines.append(f"| {t.app.name} | {t.cluster} | {len(t.manifests)} | {errors} | {len(t.problems) - errors} |")
    problems = state.all_problems()
    if problems:
        lines += ["", "| where | object | rule | problem |", "|---|---|---|---|"]
        lines += [f"| `{p.source}` | {p.object_ref} | `{p.rule}` | {_cell(p.message)} |" for p in problems]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
