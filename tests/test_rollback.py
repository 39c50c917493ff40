"""Rollback against a real Git remote: the app's commits after a revision are
reverted in Git by one pushed commit naming the app, other apps' changes stay,
bad revisions are refused (engine/source/rollback.py); with real clusters, the
gitops-rollback flow then syncs the app in a nested flow run and the cluster
follows (flows/rollback.py)."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from prefect_gitops.blocks import GitRepository
from prefect_gitops.cli.rollback import rollback_command
from conftest import kubectl
from prefect_gitops.engine.source.rollback import RollbackError, rollback_in_git, working_clone
from example_repo import example_repo, git, remove_sample_apps  # noqa: F401  (fixture)

REPLICAS = "apps/web/overlays/staging/replicas.yaml"
CONFIGMAP = "apps/web/base/configmap.yaml"
WIDGETS = "apps/widgets/widgets.yaml"


@pytest.fixture
def clean_clusters(registered_clusters):
    """The clusters, without the sample apps afterwards (as in test_sync.py, which imports the sync flow)."""
    yield registered_clusters
    remove_sample_apps(*registered_clusters.values())


def on_branch(example_repo, path: str) -> str:
    """A file as the remote's main branch has it (not the test's clone)."""
    return git("--git-dir", str(example_repo.bare), "show", f"main:{path}", cwd=example_repo.bare) + "\n"


def live(cluster, kind: str, name: str, jsonpath: str) -> str:
    return kubectl(cluster.kubeconfig, "get", kind, name, "-n", "web", "-o", f"jsonpath={jsonpath}").stdout


def change_web_and_widgets(example_repo) -> tuple[dict[str, str], str, str, str]:
    """Three commits: web scaled, widgets renamed, web greets in French."""
    original = {path: example_repo.read(path) for path in (REPLICAS, CONFIGMAP, WIDGETS)}
    scaled = example_repo.commit({REPLICAS: original[REPLICAS].replace("replicas: 1", "replicas: 2")},
                                 "web: 2 replicas")
    widgets = example_repo.commit({WIDGETS: original[WIDGETS].replace("name: small", "name: tiny")},
                                  "widgets: rename small")
    greeted = example_repo.commit({CONFIGMAP: original[CONFIGMAP].replace("hello", "bonjour")},
                                  "web: greet in French")
    return original, scaled, widgets, greeted


# --- in Git (no cluster) ----------------------------------------------------------


def test_the_apps_commits_are_reverted_by_one_pushed_commit_and_other_apps_stay(example_repo):
    block = GitRepository.load(example_repo.block_name).source()
    first = git("rev-parse", "HEAD", cwd=example_repo.work)
    original, scaled, widgets, greeted = change_web_and_widgets(example_repo)

    result = rollback_in_git(block, "web", first, why="asked by the test")

    assert [(c.sha, c.subject) for c in result.reverted] == [(greeted, "web: greet in French"),
                                                              (scaled, "web: 2 replicas")]
    assert result.pushed and result.to == first
    assert git("rev-parse", "main", cwd=example_repo.bare) == result.commit
    log = git("--git-dir", str(example_repo.bare), "log", "--format=%H %P%n%an <%ae>%n%B", "-1", "main",
              cwd=example_repo.bare)
    assert log.startswith(f"{result.commit} {greeted}\nprefect-gitops <prefect-gitops@localhost>")
    assert f"Roll back app web to {first[:12]}" in log and greeted[:12] in log and scaled[:12] in log
    assert "asked by the test" in log
    assert on_branch(example_repo, REPLICAS) == original[REPLICAS]
    assert on_branch(example_repo, CONFIGMAP) == original[CONFIGMAP]
    assert "name: tiny" in on_branch(example_repo, WIDGETS)  # another app's change stays
    assert f"- `{greeted[:12]}` web: greet in French" in result.markdown()

    again = rollback_in_git(block, "web", first)  # a rerun: Git already matches
    assert not again.pushed and again.commit == result.commit
    assert git("rev-parse", "main", cwd=example_repo.bare) == result.commit


def test_unknown_and_non_ancestor_revisions_and_nothing_to_revert_are_refused(example_repo):
    block = GitRepository.load(example_repo.block_name).source()
    head = git("rev-parse", "HEAD", cwd=example_repo.work)
    with pytest.raises(RollbackError, match=r"revision 'f{40}' is unknown"):
        rollback_in_git(block, "web", "f" * 40)

    git("checkout", "--quiet", "-b", "side", cwd=example_repo.work)
    side = example_repo.commit({CONFIGMAP: example_repo.read(CONFIGMAP).replace("hello", "hi")}, "a side branch")
    git("push", "--quiet", "origin", "side", cwd=example_repo.work)
    git("checkout", "--quiet", "main", cwd=example_repo.work)
    with pytest.raises(RollbackError, match=rf"\({side[:12]}\) is not an ancestor of main"):
        rollback_in_git(block, "web", "side")

    example_repo.commit({WIDGETS: example_repo.read(WIDGETS) + "# a comment\n"}, "widgets only")
    with pytest.raises(RollbackError, match=r"no commit after .* changed app web"):
        rollback_in_git(block, "web", head)
    with pytest.raises(RollbackError, match=r"no app named 'nope'"):
        rollback_in_git(block, "nope", head)
    with pytest.raises(RollbackError, match=r"requires signed commits"):
        rollback_in_git(dataclasses.replace(block, require_signed_commits=True), "web", head)
    assert git("rev-parse", "main", cwd=example_repo.bare) == git("rev-parse", "HEAD", cwd=example_repo.work)


def test_a_push_rejected_because_the_branch_moved_is_rebased_and_retried(example_repo):
    with working_clone(GitRepository.load(example_repo.block_name).source()) as clone:
        (clone.path / "NOTES.md").write_text("rolled back\n")
        clone.repo.git.add("NOTES.md")
        clone.commit("a note")
        moved = example_repo.commit({"README.md": "meanwhile\n"}, "pushed meanwhile")
        pushed = clone.push()
    assert git("rev-parse", "main", cwd=example_repo.bare) == pushed
    assert git("rev-parse", f"{pushed}~1", cwd=example_repo.bare) == moved


def test_cli_refuses_with_the_reason_and_exit_code_1(example_repo):
    app = typer.Typer()
    app.command("rollback")(rollback_command)
    app.command("unused")(lambda: None)  # two commands: typer keeps `rollback` as a subcommand
    out = CliRunner().invoke(app, ["rollback", "--repo", example_repo.block_name, "--app", "web", "--to", "nope"])
    assert out.exit_code == 1
    assert "rollback refused" in out.output and "'nope' is unknown" in out.output


# --- the flow, with clusters ------------------------------------------------------


@pytest.mark.cluster
def test_the_flow_rolls_back_in_git_then_syncs_in_a_nested_run_and_the_cluster_follows(example_repo, clean_clusters):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    from prefect_gitops.flows.rollback import gitops_rollback
    from prefect_gitops.flows.sync import gitops_sync

    first = git("rev-parse", "HEAD", cwd=example_repo.work)
    _, scaled, _, greeted = change_web_and_widgets(example_repo)
    assert gitops_sync(repo=example_repo.block_name).ok  # the clusters get web's changes (2 replicas, bonjour)
    staging = clean_clusters["staging"]
    assert live(staging, "configmap", "web-settings", "{.data.greeting}") == "bonjour"
    assert live(staging, "deployment", "web", "{.spec.replicas}") == "2"

    state = gitops_rollback(repo=example_repo.block_name, app="web", to=first, return_state=True)
    result = state.result()

    assert [c.sha for c in result.reverted] == [greeted, scaled] and result.pushed
    assert result.sync.ok and {(r.app, r.status.value) for r in result.sync.results} == {("web", "succeeded")}
    assert result.sync.revision == result.commit
    assert live(staging, "configmap", "web-settings", "{.data.greeting}") == "hello"
    assert live(staging, "deployment", "web", "{.spec.replicas}") == "1"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        (nested,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
    assert run.name == f"rollback web to {first}"
    assert nested.parameters["revision"] == result.commit and nested.state.is_completed()

    again = gitops_rollback(repo=example_repo.block_name, app="web", to=first)  # a rerun: Git already matches
    assert not again.pushed and again.commit == result.commit and again.sync.ok
