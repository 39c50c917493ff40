"""The validate stage: structure, schema and policy (and a server-side dry-run
when given a cluster); every problem logged, and any error stops the app."""

from __future__ import annotations

from prefect import get_run_logger, task

from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.problems import Problem, ProblemsFound, Severity
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.engine.validation.validate import check_desired_state
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES


@task(name="validate", task_run_name="validate {app.name}@{cluster}", **STAGE, **TRANSIENT_RETRIES)
def validate_target(manifests: list[Manifest], app: App, cluster: str, kube: KubeClient | None = None,
                    kubernetes_version: str | None = None, provided: list[Manifest] = ()) -> list[Problem]:
    """The warnings; raises ProblemsFound (so nothing is applied) when any problem is an error."""
    logger = get_run_logger()
    problems = check_desired_state(manifests, app.name, app.namespace, app.policy, kube, kubernetes_version,
                                   provided)
    for problem in problems:
        (logger.error if problem.severity is Severity.ERROR else logger.warning)("%s", problem)
    if any(p.severity is Severity.ERROR for p in problems):
        raise ProblemsFound(problems)
    return problems
