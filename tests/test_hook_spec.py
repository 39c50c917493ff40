"""Sync hooks without a cluster: the annotations parsed (phase, comma-separated
delete policies, BeforeHookCreation by default), `gitops validate`'s errors for
bad values (file:line, object, rule `object.hook`), hooks kept out of the app's
objects, when a sync runs them, and how a hook's pods are told in its logs.
tests/test_hooks.py runs them on a real cluster."""

from __future__ import annotations

import pytest

from prefect_gitops.engine.changes.hook_runs import pod_outcome
from prefect_gitops.engine.changes.hooks import (DEFAULT_DELETE_POLICIES, DeletePolicy, HookSpecError, Phase,
                                                 app_objects, delete_policies_of, hooks_markdown, hooks_of,
                                                 hooks_run, phase_of)
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.problems import Severity
from prefect_gitops.engine.spec.policy_settings import PolicySettings
from prefect_gitops.engine.validation.validate import validate

APP = NAMESPACE = "shop"


def job(name: str = "migrate", namespace: str | None = None, **annotations: str) -> dict:
    metadata = {"name": name, "annotations": {f"gitops.prefect.io/{k.replace('_', '-')}": v
                                              for k, v in annotations.items()}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox:1.37",
                 "resources": {"limits": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


def manifests(*objs: dict) -> list[Manifest]:
    return [Manifest(obj, Source(f"apps/shop/{i}.yaml", 1 + 10 * i)) for i, obj in enumerate(objs)]


def hook_problems(*objs: dict) -> list[str]:
    return [f"{p.severity.value} {p}" for p in validate(manifests(*objs), APP, NAMESPACE, PolicySettings())
            if p.rule == "object.hook"]


# ---- the annotations ----------------------------------------------------------------------

def test_the_phase_and_the_delete_policies_are_read_from_the_annotations():
    assert phase_of(job(hook="PostSync")) is Phase.POST_SYNC
    assert delete_policies_of(job(hook="PreSync")) == DEFAULT_DELETE_POLICIES == {DeletePolicy.BEFORE_HOOK_CREATION}
    assert delete_policies_of(job(hook="PreSync", hook_delete_policy=" HookSucceeded ,HookFailed")) == {
        DeletePolicy.HOOK_SUCCEEDED, DeletePolicy.HOOK_FAILED}
    with pytest.raises(HookSpecError, match="'Presync' is not one of PreSync, PostSync, SyncFail"):
        phase_of(job(hook="Presync"))
    with pytest.raises(HookSpecError, match="'Always' is not among BeforeHookCreation"):
        delete_policies_of(job(hook="PreSync", hook_delete_policy="HookSucceeded,Always"))


def test_hooks_are_not_the_apps_objects_and_come_by_phase():
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    found = manifests(job("migrate", hook="PreSync"), deployment, job("smoke", hook="PostSync"),
                      job("broken", hook="Whenever"))
    assert [m.name for m in app_objects(found)] == ["web"]  # a bad hook value is never applied as the app's
    assert [h.name for h in hooks_of(found[:3], Phase.PRE_SYNC)] == ["migrate"]
    assert [h.name for h in hooks_of(found[:3], Phase.POST_SYNC)] == ["smoke"]
    markdown = hooks_markdown(found[:3])
    assert "| PreSync | `Job/migrate` | apps/shop/0.yaml:1 |" in markdown
    assert "| PostSync | `Job/smoke` | apps/shop/2.yaml:21 |" in markdown
    assert hooks_markdown(found[1:2]) == ""


@pytest.mark.parametrize("changes, last_healthy, reverting, runs", [
    (True, "old", False, True),  # a new revision rolls out
    (True, None, False, True),  # the first sync, or a recovery onto a new cluster
    (False, "old", False, False),  # nothing of the app changes (a commit to another app)
    (True, "rev", False, False),  # a self-heal or drift heal of the revision already out
    (True, "old", True, False),  # an auto-revert: the SyncFail hooks were its undo step
])
def test_hooks_run_when_a_sync_rolls_a_revision_out(changes, last_healthy, reverting, runs):
    assert hooks_run(changes, last_healthy, "rev", reverting) is runs


# ---- gitops validate ----------------------------------------------------------------------

def test_a_good_hook_has_no_problem():
    assert hook_problems(job(hook="PreSync", hook_delete_policy="BeforeHookCreation,HookSucceeded"),
                         job("smoke", hook="PostSync"), job("undo", hook="SyncFail")) == []


def test_bad_hook_values_are_errors_naming_file_line_object_and_rule():
    assert hook_problems(job(hook="Presync"), job("smoke", hook="PostSync", hook_delete_policy="HookSucceded")) == [
        "error apps/shop/0.yaml:1: Job/migrate: gitops.prefect.io/hook 'Presync' is not one of PreSync, PostSync, "
        "SyncFail [object.hook]",
        "error apps/shop/1.yaml:11: Job/smoke: gitops.prefect.io/hook-delete-policy 'HookSucceded' is not among "
        "BeforeHookCreation, HookSucceeded, HookFailed [object.hook]",
    ]


def test_a_delete_policy_without_a_hook_is_a_warning():
    [problem] = hook_problems(job(hook_delete_policy="HookSucceeded"))
    assert problem.startswith("warning apps/shop/0.yaml:1: Job/migrate: gitops.prefect.io/hook-delete-policy has no")


def test_a_presync_hook_cannot_run_in_a_namespace_the_app_creates():
    own = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    [problem] = hook_problems(own, job(hook="PreSync"), job("smoke", hook="PostSync"),
                              job("elsewhere", namespace="platform", hook="PreSync"))
    assert problem.startswith("error apps/shop/1.yaml:11: Job/migrate: a PreSync hook runs before the app's objects")
    assert "namespace 'shop' that the app itself creates" in problem and problem.endswith("[object.hook]")
    assert all(p.severity is Severity.ERROR for p in validate(manifests(own, job(hook="PreSync")), APP, NAMESPACE,
                                                              PolicySettings()))


# ---- a hook's pods, in its logs -------------------------------------------------------------

def test_a_pod_is_told_by_its_phase_and_each_containers_state_reason_exit_code_and_message():
    failed = {"metadata": {"name": "migrate-x7k2p"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "main", "state": {"terminated": {"reason": "Error", "exitCode": 3, "message": "no such table\n"}}}]}}
    assert pod_outcome(failed) == ("pod migrate-x7k2p Failed: container main terminated (Error, exit code 3): "
                                   "no such table")
    pulling = {"metadata": {"name": "migrate-a1"}, "status": {"phase": "Pending", "initContainerStatuses": [
        {"name": "wait", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}], "containerStatuses": [
        {"name": "main", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "back-off pulling"}}}]}}
    assert pod_outcome(pulling) == ("pod migrate-a1 Pending: container wait terminated (Completed, exit code 0); "
                                    "container main waiting (ImagePullBackOff): back-off pulling")
    evicted = {"metadata": {"name": "m"}, "status": {"phase": "Failed", "reason": "Evicted", "message": "low memory"}}
    assert pod_outcome(evicted) == "pod m Failed (Evicted: low memory): no container started"
