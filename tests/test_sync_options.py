"""Sync options of an object (`gitops.prefect.io/sync-options`): validation names
file:line, the object and the rule; IfNotPresent leaves an existing object as a
person left it (sync, drift and heal alike), Replace=true deletes and creates the
object on a change. The cluster tests share one synced repository."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
import yaml

from prefect_gitops.engine.changes.changeset import Action, ObjectChange
from prefect_gitops.engine.changes.diff import recreate_allowed
from prefect_gitops.engine.changes.sync_options import CREATE_ONLY_EXISTS, mark_replaced
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.spec.policy_settings import PolicySettings
from prefect_gitops.engine.state.drift import DesiredObject, DriftType, compare
from prefect_gitops.engine.validation.validate import validate

ANNOTATION = "gitops.prefect.io/sync-options"


def secret(options: str | None = None, name: str = "db-password") -> dict:
    metadata = {"name": name, **({"annotations": {ANNOTATION: options}} if options is not None else {})}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
            "stringData": {"password": "placeholder"}}


def sync_option_problems(options: str) -> list[str]:
    manifest = Manifest(secret(options), Source("apps/db/secret.yaml", 4))
    return [str(p) for p in validate([manifest], "db", "db", PolicySettings()) if p.rule == "object.sync-options"]


# ---- validation (no cluster) -------------------------------------------------------------

@pytest.mark.parametrize("options", ["IfNotPresent", "Replace=true", " IfNotPresent ", "IfNotPresent,"])
def test_known_options_are_valid(options):
    assert sync_option_problems(options) == []


def test_an_unknown_option_names_the_file_line_object_and_rule():
    [problem] = sync_option_problems("IfNotPresent,Prune=false")
    assert problem.startswith("apps/db/secret.yaml:4: Secret/db-password: ")
    assert "unknown sync option 'Prune=false' (known: IfNotPresent, Replace=true)" in problem
    assert problem.endswith("[object.sync-options]")


def test_a_misspelt_option_is_an_error_with_the_right_spelling():
    [problem] = sync_option_problems("replace=True")
    assert "unknown sync option 'replace=True'" in problem and "did you mean Replace=true?" in problem


def test_create_only_and_replace_exclude_each_other():
    [problem] = sync_option_problems("IfNotPresent, Replace=true")
    assert "exclude each other" in problem and problem.endswith("[object.sync-options]")


# ---- plan and drift logic (no cluster) --------------------------------------------------------

def change(obj: dict, action: Action = Action.CONFIGURED) -> ObjectChange:
    return ObjectChange("v1", obj["kind"], "db", obj["metadata"]["name"], Source("a.yaml", 1), action,
                        diff='- data.a: "1"\n+ data.a: "2"', desired=obj)


def test_replace_true_recreates_a_changed_object_and_allows_an_immutable_change():
    replaced, plain = change(secret("Replace=true")), change(secret())
    mark_replaced(replaced)
    mark_replaced(plain)
    assert replaced.recreate and replaced.diff.startswith("(replaced (Replace=true): deleted and created again)")
    assert not plain.recreate
    assert recreate_allowed(replaced, False) and not recreate_allowed(plain, False)
    unchanged = change(secret("Replace=true"), Action.UNCHANGED)
    mark_replaced(unchanged)
    assert not unchanged.recreate  # nothing changes: nothing is replaced


def test_a_create_only_object_is_never_modified_drift_only_missing():
    desired = DesiredObject({**secret("IfNotPresent"), "data": {"password": "cGxhY2Vob2xkZXI="}})
    desired.body.pop("stringData")
    by_hand = {**desired.body, "data": {"password": base64.b64encode(b"by-hand").decode()}}
    assert compare(desired, by_hand) is None
    assert compare(desired, None).type is DriftType.MISSING
    plain = DesiredObject({**desired.body, "metadata": {"name": "db-password"}})
    assert compare(plain, by_hand).type is DriftType.MODIFIED  # the same edit without the option is drift


# ---- on the real cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def options_app(registered_clusters, prefect_api, tmp_path_factory):
    """One app on staging, synced once: a create-only Secret and a Replace=true
    ConfigMap. Then a person edits the Secret with kubectl, Git changes both,
    and one sync runs: its result, and the ConfigMap's uid before it."""
    from conftest import kubectl
    from plain_repo import forget_apps, gitops_yaml, make_plain_repo
    from prefect_gitops.flows.sync import gitops_sync

    staging = registered_clusters["staging"].kubeconfig
    app = namespace = f"sync-options-{secrets.token_hex(3)}"
    spec = gitops_yaml({"name": app, "path": "app", "namespace": namespace, "clusters": ["staging"],
                        "syncPolicy": {"prune": True, "selfHeal": True}})

    def files(password: str, value: str) -> dict[str, str]:
        created = secret("IfNotPresent", name="filled-by-hand")
        created["stringData"]["password"] = password
        replaced = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"v": value},
                    "metadata": {"name": "replaced", "annotations": {ANNOTATION: "Replace=true"}}}
        return {"app/secret.yaml": yaml.safe_dump(created), "app/configmap.yaml": yaml.safe_dump(replaced)}

    kubectl(staging, "create", "namespace", namespace)
    try:
        repo = make_plain_repo(tmp_path_factory.mktemp("sync-options"), "sync-options",
                               {"gitops.yaml": spec, **files("placeholder", "1")})
        assert gitops_sync(repo=repo.block_name).ok
        uid = live(staging, namespace, "configmap", "replaced")["metadata"]["uid"]
        kubectl(staging, "patch", "secret", "filled-by-hand", "-n", namespace, "-p",
                json.dumps({"data": {"password": base64.b64encode(b"by-hand").decode()}}))
        repo.commit(files("from-git", "2"), "both change in Git")
        [result] = gitops_sync(repo=repo.block_name, apps=[app]).results
        yield repo, app, namespace, result, uid
    finally:
        kubectl(staging, "delete", "namespace", namespace, "--wait=false", check=False)
        forget_apps(registered_clusters["staging"], app)


def live(kubeconfig, namespace: str, kind: str, name: str) -> dict:
    from conftest import kubectl

    return json.loads(kubectl(kubeconfig, "get", kind, name, "-n", namespace, "-o", "json").stdout)


def password_of(kubeconfig, namespace: str) -> str:
    return base64.b64decode(live(kubeconfig, namespace, "secret", "filled-by-hand")["data"]["password"]).decode()


def obj(result, ref: str):
    return next(o for o in result.objects if o.ref == ref)


@pytest.mark.cluster
def test_a_create_only_secret_changed_by_hand_stays_so_through_sync_drift_and_heal(options_app, registered_clusters):
    from prefect_gitops.engine.report import SyncStatus
    from prefect_gitops.flows.drift import gitops_drift

    repo, app, namespace, result, _ = options_app
    staging = registered_clusters["staging"].kubeconfig
    assert result.status is SyncStatus.SUCCEEDED, result.message
    created = obj(result, f"Secret/{namespace}/filled-by-hand")
    assert (created.action, created.diff) == ("skipped", CREATE_ONLY_EXISTS)
    assert password_of(staging, namespace) == "by-hand"
    [drift] = gitops_drift(repo=repo.block_name, apps=[app], heal=True).results
    assert drift.status is SyncStatus.SUCCEEDED and drift.message.startswith("no drift"), drift.message
    assert obj(drift, f"Secret/{namespace}/filled-by-hand").action == "unchanged"
    assert password_of(staging, namespace) == "by-hand"


@pytest.mark.cluster
def test_replace_true_deletes_and_creates_the_object_on_a_change(options_app, registered_clusters):
    _, _, namespace, result, uid = options_app
    replaced = obj(result, f"ConfigMap/{namespace}/replaced")
    assert replaced.action == "configured" and replaced.outcome == "done", replaced
    assert replaced.diff.startswith("(replaced (Replace=true): deleted and created again)\n"), replaced.diff
    now = live(registered_clusters["staging"].kubeconfig, namespace, "configmap", "replaced")
    assert now["data"] == {"v": "2"} and now["metadata"]["uid"] != uid
