"""The per-app diff artifact (`gitops-diff-APP-CLUSTER`) as Prefect's REST API
returns it: published when something changes, `-`/`+` lines one field a line,
Secret values masked; none when nothing changed. A real cluster, a real Git
remote, Prefect's own server."""

from __future__ import annotations

import base64
import re

import pytest

from prefect_gitops.flows.sync import gitops_sync
from plain_repo import configmap, flow_run_named, forget_apps, gitops_yaml, make_plain_repo, secret
from test_recovery import api_post

pytestmark = pytest.mark.cluster

APP = "greeter"
KEY = f"gitops-diff-{APP}-staging"
CANARIES = ("canary-diff-first-5c0f1e", "canary-diff-second-9a27d4")


def diff_artifacts(api: str, flow_run_id: str | None = None) -> list[dict]:
    found = {"key": {"any_": [KEY]}}
    if flow_run_id:
        found["flow_run_id"] = {"any_": [flow_run_id]}
    return api_post(api, "/artifacts/filter", {"artifacts": found, "limit": 200})


def diff_block(markdown: str, heading: str) -> list[str]:
    """The lines of the ```diff block under `## heading`."""
    section = markdown.split(f"## {heading}\n", 1)[1]
    return section.split("```diff\n", 1)[1].split("\n```", 1)[0].splitlines()


@pytest.fixture
def staging(registered_clusters):
    yield registered_clusters["staging"]
    forget_apps(registered_clusters["staging"], APP)


def test_a_change_publishes_a_diff_artifact_field_by_field_with_secrets_masked_and_a_no_op_none(
        staging, namespace, prefect_api, tmp_path):
    spec = gitops_yaml({"name": APP, "path": APP, "clusters": ["staging"], "namespace": namespace})
    repo = make_plain_repo(tmp_path, "diff-artifact", {
        "gitops.yaml": spec, f"{APP}/settings.yaml": configmap("settings", greeting="hello"),
        f"{APP}/token.yaml": secret("token", token=CANARIES[0])})
    assert gitops_sync(repo=repo.block_name).ok
    changed = repo.commit({f"{APP}/settings.yaml": configmap("settings", greeting="bonjour", farewell="au revoir"),
                           f"{APP}/token.yaml": secret("token", token=CANARIES[1])}, "French, a new token")
    assert gitops_sync(repo=repo.block_name).ok

    run = flow_run_named(prefect_api, f"{APP}@staging {changed[:7]}")
    [artifact] = diff_artifacts(prefect_api, run["id"])
    markdown = artifact["data"]
    assert artifact["type"] == "markdown"
    assert diff_block(markdown, f"configured `ConfigMap/{namespace}/settings`") == [
        '+ data.farewell: "au revoir"', '- data.greeting: "hello"', '+ data.greeting: "bonjour"']
    before, after = diff_block(markdown, f"configured `Secret/{namespace}/token`")
    old = re.fullmatch(r'- data\.token: "(\++)"', before)
    new = re.fullmatch(r'\+ data\.token: "(\++)"', after)
    assert old and new and old.group(1) != new.group(1), (before, after)  # a change shows, the value never does
    for every in diff_artifacts(prefect_api):  # the first sync's (objects created) too
        shown = every["data"] + (every["description"] or "")
        for canary in CANARIES:
            assert canary not in shown and base64.b64encode(canary.encode()).decode() not in shown

    published = len(diff_artifacts(prefect_api))
    again = gitops_sync(repo=repo.block_name)
    assert {o.action for r in again.results for o in r.objects} == {"unchanged"}
    assert len(diff_artifacts(prefect_api)) == published
