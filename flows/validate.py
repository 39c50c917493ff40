"""`gitops-validate`: the first half of the pipeline, writing nothing. Fetch one
revision, then render and validate every selected app for each cluster it
targets (structure, schema, policy, and a server-side dry-run against the
cluster), with the same render and validate tasks as a sync. Every problem of
every app and cluster is reported together; the run fails if any is an error."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.utilities.annotations import quote

from prefect_gitops.blocks import GitRepository
from prefect_gitops.blocks.decryption import render_options
from prefect_gitops.blocks.registry import load_clusters
from prefect_gitops.engine.problems import Problem, ProblemsFound, Severity
from prefect_gitops.engine.report import table_cell
from prefect_gitops.engine.spec.targets import Target, provided_by_dependencies
from prefect_gitops.engine.workspace import Workspace, opened
from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.tasks.fetch import fetch_revision
from prefect_gitops.tasks.render import render_target
from prefect_gitops.tasks.validate import validate_target


@dataclass
class DesiredState:
    revision: str
    targets: list[Target]
    problems: list[Problem] = field(default_factory=list)  # about the spec or the selection, not one target

    def all_problems(self) -> list[Problem]:
        return self.problems + [p for t in self.targets for p in t.problems]

    def errors(self) -> list[Problem]:
        return [p for p in self.all_problems() if p.severity is Severity.ERROR]


class ValidationFailed(ProblemsFound):
    """Raised by the flow when any problem is an error; carries what was found."""

    def __init__(self, desired: DesiredState):
        super().__init__(desired.all_problems())
        self.desired = desired


@gitops_flow(name="gitops-validate", flow_run_name="validate {repo}")
def gitops_validate(repo: str, apps: list[str] | None = None, clusters: list[str] | None = None,
                    revision: str | None = None, server_dry_run: bool = True) -> DesiredState:
    """Fetch, render and validate without writing anywhere; fails listing every error.

    Args:
        repo: The Git repository block holding gitops.yaml and the manifests.
        apps: Only these apps (all when empty).
        clusters: Only these clusters (all that the apps target when empty).
        revision: A branch, tag or commit SHA; the block's branch when empty.
        server_dry_run: Also dry-run every object against its cluster's API server.
    """
    source = GitRepository.load(repo).source()
    fetched = fetch_revision(repo, source, revision)
    workspace = Workspace.load(repo, source, fetched.sha, fetched.tree, load_clusters(),
                               checkout=lambda sha: fetch_revision(repo, source, sha).tree,
                               render_options=render_options)
    with opened(workspace):
        problems = workspace.select(apps, clusters)
        state = DesiredState(fetched.sha, workspace.targets, problems)
        versions: dict[str, str] = {}  # asked once per cluster, not once per app
        for target in state.targets:
            kube = workspace.kube(target.cluster) if server_dry_run else None
            if kube is not None and target.cluster not in versions:
                versions[target.cluster] = kube.server_version()  # time-limited, unreachable named
            _check(workspace, target, kube, versions.get(target.cluster))
    create_markdown_artifact(key="gitops-validate", markdown=problems_markdown(state),
                             description=f"validation of {state.revision[:12]}")
    if state.errors():
        raise ValidationFailed(state)
    return state


def _check(workspace: Workspace, target: Target, kube, version: str | None) -> None:
    """Render and validate one target, keeping every problem on it. The dry-run
    impersonates the app's ServiceAccount, if it names one; an app that a fencing
    cluster refuses is validated offline only."""
    fence = workspace.fence_problems(target.app, target.cluster)
    kube = workspace.kube_for(target.app, target.cluster) if kube is not None and not fence else None
    try:
        target.manifests = render_target(workspace.tree, target.app, target.cluster, workspace.revision)
        provided = provided_by_dependencies(workspace.spec, target, workspace.targets)
        # quote: Prefect need not walk every manifest looking for futures
        target.problems = fence + validate_target(quote(target.manifests), target.app, target.cluster, kube,
                                                  version, quote(provided))
    except ProblemsFound as found:
        target.problems = fence + found.problems
    get_run_logger().info("%s: %d objects, %d problems", target.name, len(target.manifests), len(target.problems))


def problems_markdown(state: DesiredState) -> str:
    lines = [f"# Validation of `{state.revision[:12]}`", "",
             "| app | cluster | objects | errors | warnings |", "|---|---|---|---|---|"]
    for t in state.targets:
        errors = len(t.errors())
        lines.append(f"| {t.app.name} | {t.cluster} | {len(t.manifests)} | {errors} | {len(t.problems) - errors} |")
    problems = state.all_problems()
    if problems:
        lines += ["", "| where | object | rule | problem |", "|---|---|---|---|"]
        lines += [f"| `{p.source}` | {p.object_ref} | `{p.rule}` | {table_cell(p.message)} |" for p in problems]
    return "\n".join(lines)
