"""Suspend and resume: the gitops.yaml field is validated like every field; on a
real cluster a suspended app (by `gitops suspend` or by the field) is left alone
by sync and heal, its drift is still reported, `gitops status` says who
suspended it and since when, and `gitops resume` lets the next sync apply."""

from __future__ import annotations

import getpass
import json
import secrets
import socket
import textwrap
import threading
import time

import pytest

from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.spec.appspec import parse_appspec
from prefect_gitops.engine.state.inventory import Inventory
from prefect_gitops.engine.state.suspend import SUSPENDED_ANNOTATION, Suspension, recorded, suspension

HEALTH_TIMEOUT_S = 5  # a sync of a Deployment that never rolls out fails after it, then reverts

SPEC = """
apps:
  - name: web
    path: apps/web
    clusters: [staging]
    suspend: {value}
"""


def app_with(value: str):
    return parse_appspec(textwrap.dedent(SPEC.format(value=value)).lstrip("\n")).app("web")


# ---- the field (no cluster) ---------------------------------------------------------------

def test_suspend_is_off_by_default_and_on_when_true():
    assert parse_appspec("apps: [{name: web, path: w, clusters: [a]}]").app("web").suspend is False
    assert app_with("true").suspend is True
    assert suspension(app_with("true"), None) == Suspension("gitops.yaml (suspend: true)")


def test_a_suspend_that_is_not_a_boolean_names_its_line_app_and_rule():
    with pytest.raises(ProblemsFound) as raised:
        app_with("until-friday")
    [problem] = raised.value.problems
    assert (problem.source.line, problem.object_ref, problem.rule) == (5, "app/web", "appspec.invalid")
    assert str(problem).startswith("gitops.yaml:5: app/web: suspend: ") and "boolean" in problem.message


# ---- the record in the inventory (no cluster) -------------------------------------------------

def inventory_with(annotation: str | None) -> Inventory:
    annotations = {SUSPENDED_ANNOTATION: annotation} if annotation is not None else {}
    return Inventory.from_configmap({"metadata": {"labels": {}, "annotations": annotations}, "data": {"app": "web"}})


def test_the_record_is_read_from_the_inventory_and_the_field_comes_first():
    record = json.dumps({"by": "alice@laptop", "since": "2026-05-01T10:00:00+00:00", "reason": "incident 42"})
    found = recorded(inventory_with(record))
    assert found.describe() == "suspended by alice@laptop since 2026-05-01T10:00:00+00:00 (incident 42)"
    assert suspension(app_with("false"), inventory_with(record)) == found
    assert suspension(app_with("true"), inventory_with(record)).by_field
    assert suspension(app_with("false"), inventory_with(None)) is None
    assert suspension(app_with("false"), None) is None


def test_a_record_edited_into_something_unreadable_still_suspends():
    assert recorded(inventory_with("not json")).by.startswith("unknown")


# ---- on the real cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def suspended_app(registered_clusters, prefect_api, tmp_path_factory):
    """One self-healing app on staging, synced once: (repo, app, namespace)."""
    from conftest import kubectl
    from plain_repo import configmap, forget_apps, gitops_yaml, make_plain_repo
    from prefect_gitops.flows.sync import gitops_sync

    staging = registered_clusters["staging"].kubeconfig
    app = namespace = f"suspend-{secrets.token_hex(3)}"
    kubectl(staging, "create", "namespace", namespace)
    try:
        files = {"gitops.yaml": spec_of(app), "app/settings.yaml": configmap("settings", greeting="hello")}
        repo = make_plain_repo(tmp_path_factory.mktemp("suspend"), "suspend", files)
        assert gitops_sync(repo=repo.block_name).ok
        yield repo, app, namespace
    finally:
        kubectl(staging, "delete", "namespace", namespace, "--wait=false", check=False)
        forget_apps(registered_clusters["staging"], app)


def spec_of(app: str, suspend: bool = False) -> str:
    from plain_repo import gitops_yaml

    policy = {"prune": True, "selfHeal": True, "autoRevert": {"enabled": True, "mode": "cluster"},
              "healthTimeoutSeconds": HEALTH_TIMEOUT_S}
    return gitops_yaml({"name": app, "path": "app", "namespace": app, "clusters": ["staging"], "suspend": suspend,
                        "syncPolicy": policy})


def gitops(*args: str):
    """`gitops suspend` and `gitops resume`, as the command line runs them."""
    import typer
    from typer.testing import CliRunner

    from prefect_gitops.cli.suspend import resume_command, suspend_command

    cli = typer.Typer()
    cli.command("suspend")(suspend_command)
    cli.command("resume")(resume_command)
    return CliRunner().invoke(cli, list(args))


def settings(registered_clusters, namespace: str) -> dict:
    from conftest import kubectl

    return json.loads(kubectl(registered_clusters["staging"].kubeconfig, "get", "configmap", "settings", "-n",
                              namespace, "-o", "json").stdout)


@pytest.mark.cluster
def test_a_suspended_app_is_left_alone_by_sync_and_heal_until_resumed(suspended_app, registered_clusters,
                                                                      prefect_api):
    from conftest import kubectl
    from plain_repo import configmap, flow_run_named, state_of
    from prefect_gitops.cli.status import app_statuses
    from prefect_gitops.engine.report import SyncStatus
    from prefect_gitops.flows.drift import gitops_drift
    from prefect_gitops.flows.sync import gitops_sync

    repo, app, namespace = suspended_app
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    done = gitops("suspend", app, "--repo", repo.block_name, "--reason", "incident 42")
    assert done.exit_code == 0 and f"{app} on staging: suspended by {by} since " in done.output, done.output

    head = repo.commit({"app/settings.yaml": configmap("settings", greeting="bonjour")}, "a change while suspended")
    assert gitops_sync(repo=repo.block_name, apps=[app], if_changed=True).results == []  # the tick: no app run
    [skipped] = gitops_sync(repo=repo.block_name, apps=[app]).results  # a person's sync says why it does nothing
    assert skipped.status is SyncStatus.SKIPPED and skipped.suspended, skipped
    assert skipped.message.startswith(f"suspended by {by} since ") and "(incident 42); not synced" in skipped.message
    assert state_of(flow_run_named(prefect_api, f"{app}@staging {head[:7]}")) == ("COMPLETED", "Skipped")
    assert settings(registered_clusters, namespace)["data"] == {"greeting": "hello"}

    kubectl(registered_clusters["staging"].kubeconfig, "label", "configmap", "settings", "-n", namespace, "hand=made")
    [drift] = gitops_drift(repo=repo.block_name, apps=[app]).results  # selfHeal: as the scheduled check heals
    assert drift.suspended and "1 modified" in drift.message and f"(suspended by {by} since " in drift.message
    assert drift.message.endswith("(incident 42): not healed)"), drift.message
    assert settings(registered_clusters, namespace)["metadata"]["labels"]["hand"] == "made"

    [row] = [r for r in app_statuses(repo.block_name) if r["app"] == app]
    assert row["suspended"]["by"] == by and row["suspended"]["reason"] == "incident 42", row
    assert row["suspended"]["since"][:4].isdigit()

    resumed = gitops("resume", app, "--repo", repo.block_name)
    assert resumed.exit_code == 0 and f"{app} on staging: resumed (was suspended by {by}" in resumed.output
    [synced] = gitops_sync(repo=repo.block_name, apps=[app]).results
    assert synced.status is SyncStatus.SUCCEEDED and not synced.suspended, synced.message
    live = settings(registered_clusters, namespace)
    assert live["data"] == {"greeting": "bonjour"} and "hand" not in live["metadata"]["labels"]


@pytest.mark.cluster
def test_a_sync_that_fails_while_the_app_is_suspended_is_not_reverted(suspended_app, registered_clusters):
    """Suspended once the bad revision is applied, during its health wait: the
    revert that follows the health timeout leaves the app as it is."""
    from prefect_gitops.blocks import KubernetesCluster
    from prefect_gitops.engine.cluster.kube import KubeClient
    from prefect_gitops.engine.report import SyncFailed, SyncStatus
    from prefect_gitops.engine.state.suspend import resume, suspend
    from prefect_gitops.flows.sync import gitops_sync
    from plain_repo import deployment

    repo, app, namespace = suspended_app
    repo.commit({"app/stuck.yaml": deployment("stuck", paused=True)}, "a Deployment that never rolls out")
    with KubeClient.for_cluster(KubernetesCluster.load("staging").cluster("staging")) as kube:
        def suspend_once_applied() -> None:
            deadline = time.monotonic() + 60
            while kube.get("apps/v1", "Deployment", "stuck", namespace) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            suspend(kube, app, "the on-call", "mid-sync")

        watcher = threading.Thread(target=suspend_once_applied, daemon=True)
        watcher.start()
        with pytest.raises(SyncFailed) as failed:
            gitops_sync(repo=repo.block_name, apps=[app])
        watcher.join(timeout=30)
        [result] = failed.value.report.results
        assert result.status is SyncStatus.FAILED, result.message  # not reverted
        assert "not reverted: suspended by the on-call since " in result.message, result.message
        assert kube.get("apps/v1", "Deployment", "stuck", namespace) is not None  # the revert would prune it
        resume(kube, app)


@pytest.mark.cluster
def test_suspended_by_its_gitops_yaml_field_resume_says_the_field_must_change(suspended_app):
    from prefect_gitops.engine.report import SyncStatus
    from prefect_gitops.flows.sync import gitops_sync

    repo, app, _ = suspended_app
    repo.commit({"gitops.yaml": spec_of(app, suspend=True)}, "suspend in Git")
    [skipped] = gitops_sync(repo=repo.block_name, apps=[app]).results
    assert skipped.status is SyncStatus.SKIPPED and skipped.message == "suspended by gitops.yaml (suspend: true); " \
                                                                       "not synced", skipped.message
    refused = gitops("resume", app, "--repo", repo.block_name)
    assert refused.exit_code == 1, refused.output
    assert "its gitops.yaml sets suspend: true; change that in Git to resume it" in refused.output
