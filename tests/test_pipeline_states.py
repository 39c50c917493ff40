"""The pipeline's decisions that need no cluster: which failures are retried,
the state a run ends in, the render cache, what a revert may prune."""

from __future__ import annotations

import urllib3

from prefect_gitops.engine.changes.changeset import Action, ChangeSet, ObjectChange
from prefect_gitops.engine.cluster.kube import ApiError
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.report import SyncFailed, SyncReport, SyncStatus, TargetResult
from prefect_gitops.engine.source import render_cache
from prefect_gitops.engine.source.git import Failure, GitError
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.engine.state.inventory import Inventory, Member
from prefect_gitops.flows.outcome import final_state
from prefect_gitops.flows.sync_app import _limit_prunes, outcome_state
from prefect_gitops.tasks.retry import TransientError, is_transient


def result(status: SyncStatus, app: str = "web", held: bool = False) -> TargetResult:
    return TargetResult(app, "production", status, "because", revision="a" * 40, held=held)


def test_transient_failures_are_retried_and_the_rest_fail_at_once():
    refused = urllib3.exceptions.NewConnectionError(None, "Connection refused")
    assert is_transient(refused)
    assert is_transient(urllib3.exceptions.MaxRetryError(None, "/api", reason=refused))
    assert is_transient(urllib3.exceptions.ProtocolError("Connection reset by peer"))
    assert is_transient(urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out"))
    assert is_transient(ApiError(503, {})) and is_transient(ApiError(429, {}))
    assert is_transient(ApiError(500, {"message": "etcdserver: leader changed"}))
    assert is_transient(TransientError("apply: connection lost"))
    assert is_transient(GitError("unreachable", Failure.UNREACHABLE)) is GitError("x", Failure.UNREACHABLE).retryable
    for permanent in (ApiError(422, {}), ApiError(403, {}), ApiError(404, {}),
                      GitError("bad credentials", Failure.AUTHENTICATION), ValueError("a bad manifest")):
        assert not is_transient(permanent), permanent


def test_an_app_runs_state_is_its_outcome():
    assert (outcome_state(result(SyncStatus.SUCCEEDED)).type.value, outcome_state(
        result(SyncStatus.SUCCEEDED)).name) == ("COMPLETED", "Completed")
    skipped = outcome_state(result(SyncStatus.SKIPPED))
    assert (skipped.type.value, skipped.name) == ("COMPLETED", "Skipped") and "because" in skipped.message
    reverted = outcome_state(result(SyncStatus.REVERTED))
    assert (reverted.type.value, reverted.name) == ("FAILED", "Reverted")
    assert outcome_state(result(SyncStatus.FAILED)).type.value == "FAILED"


def test_a_sync_fails_when_any_app_failed_or_reverted_and_never_completes_on_a_held_revision():
    ok = final_state(SyncReport("a" * 40, [result(SyncStatus.SUCCEEDED)]))
    assert ok.type.value == "COMPLETED"
    reverted = final_state(SyncReport("a" * 40, [result(SyncStatus.SUCCEEDED, "x"), result(SyncStatus.REVERTED)]))
    assert (reverted.type.value, reverted.name) == ("FAILED", "Reverted")
    assert isinstance(reverted.data, SyncFailed) and reverted.data.report.failed()[0].app == "web"
    mixed = final_state(SyncReport("a" * 40, [result(SyncStatus.FAILED, "x"), result(SyncStatus.REVERTED)]))
    assert (mixed.type.value, mixed.name) == ("FAILED", "Failed")
    held = final_state(SyncReport("a" * 40, [result(SyncStatus.SKIPPED, held=True)]))
    assert (held.type.value, held.name) == ("FAILED", "Skipped") and "is held on web@production" in held.message
    blocked = final_state(SyncReport("a" * 40, [result(SyncStatus.SKIPPED)]))
    assert blocked.type.value == "COMPLETED"  # skipped for a dependency: that dependency's run failed already
    assert final_state(SyncReport("a" * 40, [result(SyncStatus.SKIPPED, held=True)]), dry_run=True).is_completed()


def test_the_render_cache_gives_back_what_was_stored_for_the_same_revision_spec_and_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("GITOPS_HOME", str(tmp_path))
    app = App(name="web", path="apps/web", clusters=["production"])
    manifests = [Manifest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}, Source("a.yaml", 3))]
    assert render_cache.load("a" * 40, app, "production") is None
    render_cache.store("a" * 40, app, "production", manifests)
    assert render_cache.load("a" * 40, app, "production") == manifests
    assert render_cache.load("b" * 40, app, "production") is None
    assert render_cache.load("a" * 40, app, "staging") is None
    assert render_cache.load("a" * 40, App(name="web", path="apps/web", clusters=["production"], namespace="other"), "production") is None
    [entry] = (tmp_path / "render-cache").iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600


def test_a_revert_prunes_only_what_the_bad_sync_added():
    def pruned(name: str) -> ObjectChange:
        return ObjectChange("v1", "ConfigMap", "web", name, None, Action.PRUNED)

    changeset = ChangeSet([pruned("old"), pruned("added")])
    before = Inventory("web", members=[Member("v1", "ConfigMap", "web", "old")])
    _limit_prunes(changeset, prune=True, undo=before)
    assert [(c.name, c.action) for c in changeset] == [("old", Action.SKIPPED), ("added", Action.PRUNED)]
    no_prune = ChangeSet([pruned("added")])
    _limit_prunes(no_prune, prune=False, undo=None)
    assert [c.action for c in no_prune] == [Action.SKIPPED]
