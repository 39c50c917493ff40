"""Sync hooks on a real cluster, through `gitops_sync` on a real Git remote and
Prefect's own server: a PreSync migration that fails stops its sync with nothing
applied (its pods told in the hook's logs), one that succeeds completes before the
Deployment is written; PostSync runs after health; SyncFail runs on a failed sync
and before the auto-revert; delete policies are honoured; hooks stay out of the
inventory, prune and drift; each hook is a task run named with its phase, name,
app and cluster. A dry run shows the hooks and runs none.

One repository of three small apps for the module, each in a namespace the test
makes (a PreSync hook may not run in a namespace its app creates), synced twice:
revision 1 (every app), revision 2 (a new image for `hooked`, a broken one for
`reverting`). The parsing and validation are in tests/test_hook_spec.py."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import pytest
import yaml

from conftest import kubectl
from example_repo import ExampleRepo
from plain_repo import configmap, deployment, forget_apps, gitops_yaml, make_plain_repo
from prefect_gitops.engine.report import SyncFailed, SyncReport, SyncStatus, TargetResult
from prefect_gitops.flows.drift import gitops_drift
from prefect_gitops.flows.sync import gitops_sync
from test_prefect_view import child_runs, task_runs
from test_recovery import api_post
from test_revert import inventory

pytestmark = pytest.mark.cluster

APPS = ("hooked", "prefail", "reverting")
LOGS_WAIT_S = 30  # logs reach the server in batches


def job(name: str, phase: str, image: str = "busybox:1.37", delete_policy: str | None = None) -> str:
    annotations = {"gitops.prefect.io/hook": phase}
    if delete_policy:
        annotations["gitops.prefect.io/hook-delete-policy"] = delete_policy
    container = {"name": "main", "image": image, "resources": {"limits": {"cpu": "10m", "memory": "16Mi"}}}
    return yaml.safe_dump({"apiVersion": "batch/v1", "kind": "Job",
                           "metadata": {"name": name, "annotations": annotations},
                           "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                                                                              "containers": [container]}}}})


@dataclass
class Synced:
    repo: ExampleRepo
    cluster: object  # the LocalCluster of the block `staging`
    namespaces: dict[str, str]  # app -> namespace
    first: SyncReport  # every app at revision 1
    dry_run: SyncReport  # `hooked` at revision 2, a dry run
    second: SyncReport  # hooked and reverting at revision 2
    after_first: dict[str, dict | None]  # "app kind/name" -> the object as revision 1's sync left it
    after_dry_run: dict[str, dict | None]

    def live(self, app: str, kind: str, name: str) -> dict | None:
        return live_object(self.cluster, self.namespaces[app], kind, name)

    def result(self, report: SyncReport, app: str) -> TargetResult:
        [found] = [r for r in report.results if r.app == app]
        return found


def live_object(cluster, namespace: str, kind: str, name: str) -> dict | None:
    found = kubectl(cluster.kubeconfig, "get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields",
                    check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def sync(repo: ExampleRepo, **options) -> SyncReport:
    """The report of a sync, whether or not an app failed."""
    try:
        return gitops_sync(repo=repo.block_name, **options)
    except SyncFailed as failed:
        return failed.report


@pytest.fixture(scope="module")
def synced(registered_clusters, prefect_api, tmp_path_factory) -> Synced:
    suffix = secrets.token_hex(3)
    namespaces = {app: f"hooks-{app}-{suffix}" for app in APPS}
    staging = registered_clusters["staging"]

    def app(name: str, **policy) -> dict:
        return {"name": name, "path": name, "clusters": ["staging"], "namespace": namespaces[name],
                "syncPolicy": {"prune": True, "healthTimeoutSeconds": 60, **policy}}

    def snapshot() -> dict[str, dict | None]:
        return {f"{a} {kind}/{name}": live_object(staging, namespaces[a], kind, name)
                for a, kind, name in (("hooked", "job", "migrate"), ("hooked", "deployment", "web"),
                                      ("reverting", "job", "undo"))}

    files = {
        "gitops.yaml": gitops_yaml(app("hooked"), app("prefail"),
                                   app("reverting", autoRevert={"enabled": True, "mode": "cluster"})),
        "hooked/web.yaml": deployment("web"),
        "hooked/migrate.yaml": job("migrate", "PreSync"),  # BeforeHookCreation by default
        "hooked/smoke.yaml": job("smoke", "PostSync", delete_policy="HookSucceeded"),
        "prefail/settings.yaml": configmap("settings", greeting="hello"),
        "prefail/migrate.yaml": job("migrate", "PreSync", image="busybox:crashloop",
                                    delete_policy="BeforeHookCreation,HookFailed"),
        "reverting/web.yaml": deployment("web"),
        "reverting/undo.yaml": job("undo", "SyncFail"),
    }
    try:
        for namespace in namespaces.values():
            kubectl(staging.kubeconfig, "create", "namespace", namespace)
        repo = make_plain_repo(tmp_path_factory.mktemp("hooks"), "hooks", files)
        first = sync(repo)
        after_first = snapshot()
        repo.commit({"hooked/web.yaml": deployment("web", image="nginx:1.28"),
                     "reverting/web.yaml": deployment("web", image="unreachable.invalid/nginx:1.27")}, "revision 2")
        dry_run = sync(repo, apps=["hooked"], dry_run=True)
        after_dry_run = snapshot()
        second = sync(repo, apps=["hooked", "reverting"])
        yield Synced(repo, staging, namespaces, first, dry_run, second, after_first, after_dry_run)
    finally:
        kubectl(staging.kubeconfig, "delete", "namespace", *namespaces.values(), "--ignore-not-found",
                "--wait=false", check=False)
        forget_apps(staging, *APPS)


def app_run(api: str, report: SyncReport, app: str) -> dict:
    """The app's last run at the report's revision (revision 2's dry run came before its sync)."""
    [run] = api_post(api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [f"{app}@staging {report.revision[:7]}"]}},
                                                "sort": "START_TIME_DESC", "limit": 1})
    return run


def tasks_by_name(api: str, run: dict) -> dict[str, dict]:
    return {t["name"]: t for t in task_runs(api, run["id"])}


def task_logs(api: str, task_run: dict, wanted: str) -> list[str]:
    """The task run's log messages, once one contains `wanted` (or after LOGS_WAIT_S)."""
    deadline = time.monotonic() + LOGS_WAIT_S
    while True:
        found = [entry["message"] for entry in api_post(api, "/logs/filter", {
            "logs": {"task_run_id": {"any_": [task_run["id"]]}}, "limit": 200})]
        if any(wanted in message for message in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def completion_time(job: dict) -> str:
    return job["status"]["completionTime"]


def apply_time(obj: dict) -> str:
    """When our field manager last applied it (second precision, as completionTime)."""
    [entry] = [e for e in obj["metadata"]["managedFields"] if e["manager"] == "prefect-gitops"]
    return entry["time"]


# ---- PreSync ------------------------------------------------------------------------------

def test_a_failing_presync_hook_stops_the_sync_with_nothing_applied(synced, prefect_api):
    result = synced.result(synced.first, "prefail")
    assert result.status is SyncStatus.FAILED
    assert result.message.startswith(f"PreSync hook Job/{synced.namespaces['prefail']}/migrate failed: ")
    assert "Failed: BackoffLimitExceeded" in result.message, result.message
    assert "container main terminated (Error, exit code 1)" in result.message, result.message
    assert synced.live("prefail", "configmap", "settings") is None  # nothing of the app applied
    assert kubectl(synced.cluster.kubeconfig, "get", "configmap", "gitops-app-prefail", "-n", "gitops-system",
                   check=False).returncode != 0  # nor recorded
    assert synced.live("prefail", "job", "migrate") is None  # HookFailed: deleted once it failed
    run = app_run(prefect_api, synced.first, "prefail")
    assert run["state"]["type"] == "FAILED" and "PreSync hook" in run["state"]["message"]
    tasks = tasks_by_name(prefect_api, run)
    assert "apply prefail@staging" not in tasks
    hook = tasks["PreSync migrate prefail@staging"]
    assert hook["state"]["type"] == "FAILED"
    pod_lines = [m for m in task_logs(prefect_api, hook, "exit code 1") if m.startswith("pod migrate-")]
    assert pod_lines and "Failed: container main terminated (Error, exit code 1)" in pod_lines[0], pod_lines


def test_a_presync_hook_completes_before_the_deployment_is_written(synced, prefect_api):
    result = synced.result(synced.first, "hooked")
    assert result.status is SyncStatus.SUCCEEDED
    assert f"; hooks succeeded: PreSync Job/{synced.namespaces['hooked']}/migrate" in result.message, result.message
    first_migrate, first_web = synced.after_first["hooked job/migrate"], synced.after_first["hooked deployment/web"]
    assert completion_time(first_migrate) <= first_web["metadata"]["creationTimestamp"]
    changed = synced.live("hooked", "deployment", "web")
    assert changed["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert completion_time(synced.live("hooked", "job", "migrate")) <= apply_time(changed)
    for report in (synced.first, synced.second):
        tasks = tasks_by_name(prefect_api, app_run(prefect_api, report, "hooked"))
        assert tasks["PreSync migrate hooked@staging"]["end_time"] <= tasks["apply hooked@staging"]["start_time"]


def test_before_hook_creation_replaces_the_earlier_run(synced):
    again = synced.live("hooked", "job", "migrate")
    assert again["metadata"]["uid"] != synced.after_first["hooked job/migrate"]["metadata"]["uid"]
    assert again["metadata"]["labels"]["gitops.prefect.io/hook-of"] == "hooked"


# ---- PostSync and SyncFail ----------------------------------------------------------------

def test_postsync_runs_after_health_and_hook_succeeded_deletes_it(synced, prefect_api):
    tasks = tasks_by_name(prefect_api, app_run(prefect_api, synced.first, "hooked"))
    smoke = tasks["PostSync smoke hooked@staging"]
    assert smoke["state"]["type"] == "COMPLETED"
    assert tasks["health hooked@staging"]["end_time"] <= smoke["start_time"]
    assert synced.live("hooked", "job", "smoke") is None
    assert any(m.startswith("pod smoke-") and "Succeeded: container main terminated (Completed, exit code 0)" in m
               for m in task_logs(prefect_api, smoke, "exit code 0"))


def test_syncfail_runs_on_a_failed_sync_and_before_the_revert(synced, prefect_api):
    assert synced.after_first["reverting job/undo"] is None  # a sync that succeeded runs no SyncFail hook
    result = synced.result(synced.second, "reverting")
    assert result.status is SyncStatus.REVERTED, result.message
    undo = synced.live("reverting", "job", "undo")
    assert undo is not None and completion_time(undo)
    run = app_run(prefect_api, synced.second, "reverting")
    syncfail = tasks_by_name(prefect_api, run)["SyncFail undo reverting@staging"]
    [revert] = child_runs(prefect_api, run["id"])
    assert revert["name"] == f"revert reverting@staging to {synced.first.revision[:7]}"
    assert syncfail["state"]["type"] == "COMPLETED" and syncfail["end_time"] <= revert["start_time"]
    assert not any(t["name"].startswith(("PreSync", "PostSync", "SyncFail")) for t in task_runs(prefect_api,
                                                                                                  revert["id"]))


# ---- not the app's objects ----------------------------------------------------------------

def test_hooks_are_not_in_the_inventory_nor_pruned_nor_drift(synced):
    members = json.loads(inventory(synced.cluster, "hooked")["members"])
    assert [m["kind"] for m in members] == ["Deployment"]
    assert synced.live("hooked", "job", "migrate") is not None  # prune is on; the hook stays
    [result] = gitops_drift(repo=synced.repo.block_name, apps=["hooked"], clusters=["staging"], heal=False).results
    assert [(o.kind, o.action) for o in result.objects] == [("Deployment", "unchanged")]


def test_a_dry_run_shows_the_hooks_and_runs_none(synced):
    result = synced.result(synced.dry_run, "hooked")
    namespace = synced.namespaces["hooked"]
    assert result.message.endswith(f"; hooks to run: PreSync Job/{namespace}/migrate, PostSync Job/{namespace}/smoke")
    assert [o.kind for o in result.objects] == ["Deployment"]
    uid = synced.after_first["hooked job/migrate"]["metadata"]["uid"]
    assert synced.after_dry_run["hooked job/migrate"]["metadata"]["uid"] == uid  # the earlier run's, untouched
