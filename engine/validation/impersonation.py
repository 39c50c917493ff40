"""The fence of a multi-tenant cluster: a cluster block with require_impersonation
takes only apps that name a serviceAccountName, so that nothing of an app is ever
sent with the engine's own credentials there and the cluster's RBAC decides what
each app may write. An app without one is refused before anything is written,
the Lease included."""

from __future__ import annotations

from prefect_gitops.engine.problems import Problem
from prefect_gitops.engine.spec.appspec import App

RULE = "policy.impersonation-required"


def impersonation_problems(app: App, cluster: str, required: bool) -> list[Problem]:
    """The problem of an app that names no ServiceAccount on a cluster that requires one."""
    if not required or app.service_account_name:
        return []
    return [Problem(app.source, app.ref, RULE,
                    f"cluster {cluster} requires every app to name a serviceAccountName to act as "
                    f"(require_impersonation); app {app.name} names none, so nothing of it is applied there")]
