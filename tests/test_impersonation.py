"""Tenants fenced by the cluster's RBAC: an app that names a serviceAccountName is
synced impersonating that ServiceAccount, so what its Role does not allow is refused
by the API server (a 403 naming object and verb) even where our own policy allows
it; a cluster block with require_impersonation refuses an app that names none,
writing nothing. Through the real sync flow, a real Git remote and a real local
cluster with RBAC on."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

from conftest import kubectl
from example_repo import ExampleRepo, git
from prefect_gitops.engine.changes.apply import apply_changes
from prefect_gitops.engine.changes.changeset import Action
from prefect_gitops.engine.changes.diff import plan_changes
from prefect_gitops.engine.cluster.kube import KubeClient, service_account_user
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.report import SyncStatus
from prefect_gitops.flows.drift import DriftCheckFailed, gitops_drift
from prefect_gitops.engine.report import SyncFailed
from prefect_gitops.flows.sync import gitops_sync
from prefect_gitops.flows.validate import ValidationFailed, gitops_validate

pytestmark = pytest.mark.cluster

ACCOUNT = "deployer"


def tenant_rbac(namespace: str) -> str:
    """A ServiceAccount that may do anything in its own namespace, and nothing elsewhere."""
    return f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {ACCOUNT}, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {ACCOUNT}, namespace: {namespace}}}
rules:
  - apiGroups: ["", "apps"]
    resources: ["*"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {ACCOUNT}, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {ACCOUNT}}}
subjects:
  - {{kind: ServiceAccount, name: {ACCOUNT}, namespace: {namespace}}}
"""


def configmap(name: str, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"greeting": "hello"}}


def cluster_role(name: str) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}


def manifests(*objects: dict) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def gitops_yaml(*apps: dict) -> str:
    return yaml.safe_dump({"apps": list(apps)}, sort_keys=False)


def make_repo(root: Path, files: dict[str, str]) -> ExampleRepo:
    """`files` committed to a bare repository, saved as a Git repository block."""
    from prefect_gitops.blocks import GitRepository

    bare, work = root / "tenants.git", root / "work"
    work.mkdir()
    git("init", "--quiet", "--bare", "-b", "main", str(bare), cwd=root)
    git("init", "--quiet", "-b", "main", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    repo = ExampleRepo(bare, work, f"tenants-{secrets.token_hex(3)}")
    repo.commit(files, "tenants")
    GitRepository(url=f"file://{bare}", branch="main").save(repo.block_name, overwrite=True)
    return repo


def save_cluster(local_cluster, require_impersonation: bool) -> str:
    """The session's cluster saved under a block name of this test's own."""
    from prefect_gitops.blocks import KubernetesCluster

    name = f"{'fenced' if require_impersonation else 'open'}-{secrets.token_hex(3)}"
    KubernetesCluster.from_kubeconfig_file(local_cluster.kubeconfig,
                                           require_impersonation=require_impersonation).save(name, overwrite=True)
    return name


def exists(local_cluster, *args: str) -> bool:
    return kubectl(local_cluster.kubeconfig, "get", *args, check=False).returncode == 0


@pytest.fixture
def other_namespace(local_cluster):
    name = f"other-{secrets.token_hex(3)}"
    kubectl(local_cluster.kubeconfig, "create", "namespace", name)
    yield name
    kubectl(local_cluster.kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def app_name(local_cluster):
    """An app name of this test's own; its inventory and Lease removed afterwards."""
    name = f"app-{secrets.token_hex(3)}"
    yield name
    kubectl(local_cluster.kubeconfig, "delete", "-n", "gitops-system", f"configmap/gitops-app-{name}",
            f"lease/gitops-sync-{name}", "--ignore-not-found", check=False)


@pytest.fixture
def tenant(local_cluster, namespace) -> str:
    """The test's namespace, with the ServiceAccount `deployer` that may write only there."""
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=tenant_rbac(namespace))
    return namespace


def test_an_impersonating_client_acts_as_the_service_account(local_cluster, tenant):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as kube:
        user = service_account_user(tenant, ACCOUNT)
        view = kube.impersonating(user)
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        info = view.create(review)["status"]["userInfo"]
        # The API server itself gives a ServiceAccount its groups, as for `kubectl --as`.
        assert info["username"] == user
        assert info["groups"] == ["system:serviceaccounts", f"system:serviceaccounts:{tenant}",
                                  "system:authenticated"]
        assert kube.create(review)["status"]["userInfo"]["username"] != user  # the client itself is unchanged
        view.get("v1", "ServiceAccount", ACCOUNT, tenant)  # discovers the core group: once, for both
        before = kube.requests["GET"]
        kube.get("v1", "ServiceAccount", ACCOUNT, tenant)
        view.get("v1", "ServiceAccount", ACCOUNT, tenant)
        assert kube.requests["GET"] == before + 2  # one discovery, one count
        view.close()  # a view owns nothing
        assert kube.get("v1", "ServiceAccount", ACCOUNT, tenant) is not None


def test_the_clusters_rbac_refuses_what_the_account_may_not_write_even_where_our_policy_allows_it(
        local_cluster, prefect_api, tenant, other_namespace, app_name, tmp_path):
    cluster = save_cluster(local_cluster, require_impersonation=False)
    reader = f"{tenant}-reader"
    app = {"name": app_name, "path": "tenant", "clusters": [cluster], "namespace": tenant,
           "serviceAccountName": ACCOUNT,
           # Our own policy lets it write the other namespace and cluster RBAC: the cluster decides.
           "policy": {"allowedNamespaces": [tenant, other_namespace], "allowClusterRBAC": True}}
    repo = make_repo(tmp_path, {
        "gitops.yaml": gitops_yaml(app),
        "tenant/objects.yaml": manifests(configmap("settings", tenant), cluster_role(reader),
                                         configmap("intruder", other_namespace)),
    })

    with pytest.raises(SyncFailed) as failure:
        gitops_sync(repo=repo.block_name)
    [result] = failure.value.report.results
    assert result.status is SyncStatus.FAILED
    user = f'User "{service_account_user(tenant, ACCOUNT)}"'
    reasons = {o.ref: o.reason for o in result.objects}
    # Each refusal names the object, our verb and the API server's, and its words.
    assert reasons[f"ClusterRole/{reader}"].startswith(f"ClusterRole/{reader}: dry-run failed: forbidden (HTTP 403): ")
    assert f'{user} cannot patch resource "clusterroles"' in reasons[f"ClusterRole/{reader}"]
    assert f'{user} cannot patch resource "configmaps"' in reasons[f"ConfigMap/{other_namespace}/intruder"]
    assert f"in the namespace \"{other_namespace}\"" in reasons[f"ConfigMap/{other_namespace}/intruder"]
    assert f"ClusterRole/{reader}" in result.message and f"ConfigMap/{other_namespace}/intruder" in result.message
    # Refused before anything was written: not even the allowed object is half-applied.
    assert reasons[f"ConfigMap/{tenant}/settings"] == ""
    assert {o.ref: o.outcome for o in result.objects}[f"ConfigMap/{tenant}/settings"] == "not attempted"
    assert not exists(local_cluster, "configmap", "settings", "-n", tenant)
    assert not exists(local_cluster, "clusterrole", reader)
    assert not exists(local_cluster, "configmap", "intruder", "-n", other_namespace)

    # The same app with only what its Role allows goes out, written as the account.
    repo.commit({"tenant/objects.yaml": manifests(configmap("settings", tenant))}, "only the own namespace")
    report = gitops_sync(repo=repo.block_name)
    assert report.ok, report.failure_message()
    assert [(o.ref, o.action) for o in report.results[0].objects] == [(f"ConfigMap/{tenant}/settings", "created")]
    assert exists(local_cluster, "configmap", "settings", "-n", tenant)
    # Its bookkeeping is the engine's: the inventory in gitops-system, where the tenant may not write.
    assert exists(local_cluster, "configmap", f"gitops-app-{app_name}", "-n", "gitops-system")
    can = kubectl(local_cluster.kubeconfig, "auth", "can-i", "update", "configmaps", "-n", "gitops-system",
                  f"--as={service_account_user(tenant, ACCOUNT)}", check=False)
    assert can.stdout.strip() == "no"

    # The drift check reads the live objects as the account too: without its RoleBinding it may not.
    assert gitops_drift(repo=repo.block_name).results[0].message.startswith("no drift")
    kubectl(local_cluster.kubeconfig, "delete", "rolebinding", ACCOUNT, "-n", tenant)
    with pytest.raises(DriftCheckFailed) as drift:
        gitops_drift(repo=repo.block_name)
    assert f'{user} cannot list resource "configmaps"' in drift.value.report.results[0].message


def test_a_refusal_after_writes_began_leaves_each_object_done_or_failed_or_not_attempted(local_cluster, tenant):
    """The dry-run asks the same RBAC as the write (even in a namespace that does not
    exist yet), so a refusal normally stops an app before anything is written. Should
    the account lose a right between plan and apply, each object says what became of it."""
    objects = [configmap("settings", tenant),
               {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "password", "namespace": tenant},
                "stringData": {"password": "hunter2"}},
               {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": tenant},
                "spec": {"ports": [{"port": 80}]}}]
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as admin:
        kube = admin.impersonating(service_account_user(tenant, ACCOUNT))
        changeset = plan_changes(kube, "tenant", [Manifest(o, Source("tenant.yaml", 1)) for o in objects], None,
                                 default_namespace=tenant)
        assert changeset.ok and {c.action for c in changeset} == {Action.CREATED}
        # Its Role loses Secrets (applied after ConfigMaps, before Services).
        kubectl(local_cluster.kubeconfig, "patch", "role", ACCOUNT, "-n", tenant, "--type=json", "-p",
                '[{"op": "replace", "path": "/rules/0/resources", "value": ["configmaps", "services"]}]')
        apply_changes(kube, changeset)
    settings, password, web = (changeset.get(kind, name, tenant) for kind, name in
                               (("ConfigMap", "settings"), ("Secret", "password"), ("Service", "web")))
    assert settings.done and not settings.error
    assert not password.done
    assert password.error.startswith(f"Secret/{tenant}/password: apply failed: forbidden (HTTP 403): ")
    assert f'User "{service_account_user(tenant, ACCOUNT)}" cannot patch resource "secrets"' in password.error
    assert "hunter2" not in password.error
    # The Service is not attempted: the apply stops after the batch that failed.
    assert (settings.outcome, password.outcome, web.outcome) == ("done", "failed", "not attempted")
    assert exists(local_cluster, "configmap", "settings", "-n", tenant)
    assert not exists(local_cluster, "secret", "password", "-n", tenant)
    assert not exists(local_cluster, "service", "web", "-n", tenant)


def test_a_cluster_that_requires_impersonation_refuses_an_app_without_an_account(local_cluster, prefect_api, tenant,
                                                                                 app_name, tmp_path):
    cluster = save_cluster(local_cluster, require_impersonation=True)
    fenced = {"name": app_name, "path": "fenced", "clusters": [cluster], "namespace": tenant,
              "serviceAccountName": ACCOUNT}
    loose = {"name": "loose", "path": "loose", "clusters": [cluster], "namespace": tenant}
    repo = make_repo(tmp_path, {
        "gitops.yaml": gitops_yaml(fenced, loose),
        "fenced/objects.yaml": manifests(configmap("fenced", tenant)),
        "loose/objects.yaml": manifests(configmap("loose", tenant)),
    })

    with pytest.raises(ValidationFailed) as invalid:
        gitops_validate(repo=repo.block_name, server_dry_run=False)
    [problem] = invalid.value.desired.errors()
    assert (problem.rule, problem.object_ref) == ("policy.impersonation-required", "app/loose")
    assert f"cluster {cluster} requires every app to name a serviceAccountName" in problem.message

    with pytest.raises(SyncFailed) as failure:
        gitops_sync(repo=repo.block_name)
    results = {r.app: r for r in failure.value.report.results}
    assert results[app_name].status is SyncStatus.SUCCEEDED, results[app_name].message
    assert results["loose"].status is SyncStatus.FAILED
    assert results["loose"].message.startswith("refused: gitops.yaml:") and "\n" not in results["loose"].message
    assert "[policy.impersonation-required]" in results["loose"].message
    # Nothing of it written: no object, no inventory, not even its Lease.
    assert results["loose"].requests == dict.fromkeys(results["loose"].requests, 0)
    assert exists(local_cluster, "configmap", "fenced", "-n", tenant)
    assert not exists(local_cluster, "configmap", "loose", "-n", tenant)
    assert not exists(local_cluster, "configmap", "gitops-app-loose", "-n", "gitops-system")
    assert not exists(local_cluster, "lease", "gitops-sync-loose", "-n", "gitops-system")


def test_gitops_cluster_add_can_require_impersonation(local_cluster, prefect_api):
    from prefect_gitops.blocks import KubernetesCluster
    from test_validate_flow import gitops

    name = f"fenced-{secrets.token_hex(3)}"
    added = gitops(prefect_api, "cluster", "add", name, "--kubeconfig", str(local_cluster.kubeconfig),
                   "--require-impersonation")
    assert added.returncode == 0, added.stderr
    assert KubernetesCluster.load(name).require_impersonation is True
    row = next(line for line in gitops(prefect_api, "cluster", "list").stdout.splitlines() if name in line)
    assert "required" in row
    gitops(prefect_api, "cluster", "add", name, "--kubeconfig", str(local_cluster.kubeconfig))
    assert KubernetesCluster.load(name).require_impersonation is False  # saved again without it: off
