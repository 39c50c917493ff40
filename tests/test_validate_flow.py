"""The first half of the pipeline end to end: a real Git remote, Prefect's own
server, and two real local clusters. Nothing may be written to a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import kubectl
from example_repo import example_repo  # noqa: F401  (fixture)
from prefect_gitops.flows.validate import ValidationFailed, gitops_validate

pytestmark = pytest.mark.cluster

GITOPS = str(Path(sys.executable).parent / "gitops")


def gitops(prefect_api: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PREFECT_API_URL": prefect_api, **(env or {})})


def assert_nothing_written(clusters) -> None:
    for cluster in clusters.values():
        assert kubectl(cluster.kubeconfig, "get", "namespace", "web", check=False).returncode != 0
        assert kubectl(cluster.kubeconfig, "get", "crd", "widgets.example.com", check=False).returncode != 0


def test_the_sample_repository_validates_clean_on_both_clusters(example_repo, registered_clusters):
    desired = gitops_validate(repo=example_repo.block_name)
    pairs = [(t.app.name, t.cluster) for t in desired.targets]
    # Apps in dependsOn order: platform before web and widgets.
    assert pairs == [("platform", "production"), ("platform", "staging"), ("web", "production"),
                     ("web", "staging"), ("widgets", "production"), ("widgets", "staging")]
    assert desired.errors() == []
    web_production = next(t for t in desired.targets if t.app.name == "web" and t.cluster == "production")
    deployment = next(m for m in web_production.manifests if m.kind == "Deployment")
    assert deployment.obj["spec"]["replicas"] == 3
    assert str(deployment.source) == "apps/web/base/deployment.yaml:1"
    assert len(desired.revision) == 40
    assert_nothing_written(registered_clusters)


def test_every_problem_is_reported_at_once_and_nothing_is_written(example_repo, registered_clusters):
    example_repo.commit({
        # a schema error and a policy error in one Deployment
        "apps/web/base/deployment.yaml": example_repo.read("apps/web/base/deployment.yaml")
        .replace("containerPort: 80", "containerPort: 80\n              protocoll: TCP")
        .replace("image: nginx:1.27", "image: nginx:latest"),
        # malformed YAML in another app
        "apps/widgets/widgets.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: [oops\n",
    }, "break two apps")
    with pytest.raises(ValidationFailed) as failure:
        gitops_validate(repo=example_repo.block_name, clusters=["staging"])
    problems = {(str(p.source), p.object_ref, p.rule) for p in failure.value.problems if p.severity.value == "error"}
    assert ("apps/web/base/deployment.yaml:1", "Deployment/web/web", "policy.image-tag") in problems
    assert any(rule.startswith("schema.") and "Deployment/web/web" == ref for _, ref, rule in problems)
    assert any(src.startswith("apps/widgets/widgets.yaml:") and rule == "yaml.syntax"
               for src, _, rule in problems)
    assert_nothing_written(registered_clusters)


def test_an_unknown_revision_is_a_clear_error(example_repo, registered_clusters):
    from prefect_gitops.engine.source.git import GitError

    with pytest.raises(GitError, match="no-such-branch"):
        gitops_validate(repo=example_repo.block_name, revision="no-such-branch")


def test_cli_validate_prints_json_and_exits_non_zero_on_errors(example_repo, registered_clusters, prefect_api):
    clean = gitops(prefect_api, "validate", "--repo", example_repo.block_name, "--cluster", "staging", "--json")
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert [r["app"] for r in report["results"]] == ["platform", "web", "widgets"]
    # Only warnings: web and widgets need the platform's namespaces and CRD first.
    assert {p["severity"] for r in report["results"] for p in r["problems"]} == {"warning"}
    assert {p["rule"] for r in report["results"] for p in r["problems"]} == {"dryrun.skipped"}

    # Only the API server knows this is wrong: the server-side dry-run must catch it.
    example_repo.commit({"apps/platform/widget-crd.yaml": example_repo.read("apps/platform/widget-crd.yaml")
                        .replace("scope: Namespaced", "scope: Galaxy")}, "an impossible scope")
    broken = gitops(prefect_api, "validate", "--repo", example_repo.block_name, "--cluster", "staging", "--json")
    assert broken.returncode == 1, broken.stderr
    report = json.loads(broken.stdout)
    [platform] = [r for r in report["results"] if r["app"] == "platform"]
    [problem] = [p for p in platform["problems"] if p["severity"] == "error"]
    assert problem["source"] == "apps/platform/widget-crd.yaml:1"
    assert problem["object"] == "CustomResourceDefinition/widgets.example.com"
    assert problem["rule"] == "dryrun.invalid" and "Galaxy" in problem["message"]


def test_cli_saves_blocks_with_secrets_masked(prefect_api, tmp_path, local_cluster):
    added = gitops(prefect_api, "repo", "add", "secret-repo", "--url", "https://git.example.com/x.git",
                   "--token-env", "CANARY_TOKEN", env={"CANARY_TOKEN": "canary-7c1d-token"})
    assert added.returncode == 0, added.stderr
    assert "canary-7c1d-token" not in added.stdout + added.stderr
    missing = gitops(prefect_api, "repo", "add", "other", "--url", "https://x/y.git", "--token-env", "UNSET_VAR_X")
    assert missing.returncode == 2 and "UNSET_VAR_X" in missing.stderr

    cluster = gitops(prefect_api, "cluster", "add", "lab", "--kubeconfig", str(local_cluster.kubeconfig),
                     "--label", "env=lab", "--label", "region=eu")
    assert cluster.returncode == 0, cluster.stderr
    listed = gitops(prefect_api, "cluster", "list")
    assert "lab" in listed.stdout and "env=lab, region=eu" in listed.stdout

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        repo_doc = client.read_block_document_by_name("secret-repo", "gitops-git-repository", include_secrets=False)
        cluster_doc = client.read_block_document_by_name("lab", "gitops-kubernetes-cluster", include_secrets=False)
        assert client.read_block_type_by_slug("gitops-kubernetes-cluster").name == "GitOps Kubernetes Cluster"
    assert "canary-7c1d-token" not in json.dumps(repo_doc.data, default=str)
    token = local_cluster.kubeconfig.read_text().split("token: ")[1].split()[0]
    assert token not in json.dumps(cluster_doc.data, default=str)

    from prefect_gitops.blocks import KubernetesCluster

    assert KubernetesCluster.load("lab").server_version() == "v1.37.2"


def test_localcluster_up_can_register_its_cluster(prefect_api):
    name = f"pytest{os.getpid()}-reg"
    try:
        up = gitops(prefect_api, "localcluster", "up", name, "--register", "--label", "tier=dev")
        assert up.returncode == 0, up.stderr
        listed = gitops(prefect_api, "cluster", "list")
        assert name in listed.stdout and "localcluster=true, tier=dev" in listed.stdout
    finally:
        gitops(prefect_api, "localcluster", "down", name)
