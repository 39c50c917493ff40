"""Nothing of a Secret's data appears in any log, artifact or exception of the
sync, revert and drift runs: canary values are planted and searched for."""

from __future__ import annotations

import base64
import json

import pytest

from conftest import kubectl
from example_repo import example_repo  # noqa: F401  (fixture)
from prefect_gitops.flows.drift import gitops_drift
from prefect_gitops.engine.report import SyncFailed
from prefect_gitops.flows.sync import gitops_sync
from test_sync import clean_clusters  # noqa: F401  (fixture)

pytestmark = pytest.mark.cluster

CANARIES = ["canary-first-4b1e9d", "canary-second-77f0c2", "canary-by-hand-0a93ee"]


def secret(value: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-token\ntype: Opaque\nstringData:\n  token: {value}\n"


def everything_prefect_recorded() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        logs = [log.message for log in _all(client.read_logs)]
        artifacts = [json.dumps(a.data, default=str) + str(a.description) for a in _all(client.read_artifacts)]
        runs = [r.state.message or "" for r in _all(client.read_flow_runs) if r.state]
    return "\n".join(logs + artifacts + runs)


def _all(read) -> list:
    """Every item of a paged Prefect API listing (pages of at most 200)."""
    items, offset = [], 0
    while batch := read(limit=200, offset=offset):
        items += batch
        offset += len(batch)
    return items


def assert_no_canary(text: str) -> None:
    for canary in CANARIES:
        for form in (canary, base64.b64encode(canary.encode()).decode()):
            assert form not in text, f"a Secret value leaked: {form}"


def test_secret_values_never_leak_from_sync_revert_or_drift(example_repo, clean_clusters):
    kustomization = example_repo.read("apps/web/base/kustomization.yaml")
    example_repo.commit({"apps/web/base/secret.yaml": secret(CANARIES[0]),
                         "apps/web/base/kustomization.yaml": kustomization + "  - secret.yaml\n",
                         "gitops.yaml": example_repo.read("gitops.yaml").replace("mode: git", "mode: cluster")},
                        "a Secret for web")
    assert gitops_sync(repo=example_repo.block_name, clusters=["staging"]).ok

    # A changed value and a broken image in one commit: a diff of the Secret, then a revert.
    example_repo.commit({
        "apps/web/base/secret.yaml": secret(CANARIES[1]),
        "apps/web/base/deployment.yaml": example_repo.read("apps/web/base/deployment.yaml")
        .replace("image: nginx:1.27", "image: unreachable.invalid/nginx:1.27"),
    }, "rotate the token, break the image")
    with pytest.raises(SyncFailed) as failure:
        gitops_sync(repo=example_repo.block_name, clusters=["staging"], apps=["web"])
    assert_no_canary(str(failure.value))
    assert "reverted" in str(failure.value)

    # A change by hand, found by the drift check.
    staging = clean_clusters["staging"]
    kubectl(staging.kubeconfig, "patch", "secret", "web-token", "-n", "web", "-p",
            json.dumps({"stringData": {"token": CANARIES[2]}}))
    report = gitops_drift(repo=example_repo.block_name, clusters=["staging"], apps=["web"], heal=False)
    drifted = [o for r in report.results for o in r.objects if o.kind == "Secret"]
    assert drifted and drifted[0].reason, "the drift check must see the changed Secret"
    assert_no_canary(json.dumps([r.to_json() for r in report.results], default=str))

    assert_no_canary(everything_prefect_recorded())
