"""gitops_rollback against a real Git remote and real clusters: the app's commits
after a revision are reverted in Git by one pushed commit naming the app, the
cluster follows, other apps' changes stay, and bad revisions are refused."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from conftest import kubectl
from example_repo import example_repo, git  # noqa: F401  (fixture)
from flows.rollback import RollbackError, gitops_rollback, rollback_command, working_clone
from flows.sync import gitops_sync
from test_sync import clean_clusters  # noqa: F401  (fixture)

pytestmark = pytest.mark.cluster

REPLICAS = "apps/web/overlays/staging/replicas.yaml"
CONFIGMAP = "apps/web/base/configmap.yaml"
WIDGETS = "apps/widgets/widgets.yaml"


def on_branch(example_repo, path: str) -> str:
    """A file as the remote's main branch has it (not the test's clone)."""
    return git("--git-dir", str(example_repo.bare), "show", f"main:{path}", cwd=example_repo.bare) + "\n"


def live(cluster, kind: str, name: str, jsonpath: str) -> str:
    return kubectl(cluster.kubeconfig, "get", kind, name, "-n", "web", "-o", f"jsonpath={jsonpath}").stdout


def test_rollback_reverts_the_apps_commits_in_git_and_the_cluster_follows(example_repo, clean_clusters):
    first = git("rev-parse", "HEAD", cwd=example_repo.work)
    original = {path: example_repo.read(path) for path in (REPLICAS, CONFIGMAP, WIDGETS)}
    assert gitops_sync(repo=example_repo.block_name).ok
    scaled = example_repo.commit({REPLICAS: original[REPLICAS].replace("replicas: 1", "replicas: 2")},
                                 "web: 2 replicas")
    widgets = example_repo.commit({WIDGETS: original[WIDGETS].replace("name: small", "name: tiny")},
                                  "widgets: rename small")
    greeted = example_repo.commit({CONFIGMAP: original[CONFIGMAP].replace("hello", "bonjour")}, "web: greet in French")
    assert gitops_sync(repo=example_repo.block_name).ok
    staging = clean_clusters["staging"]
    assert live(staging, "configmap", "web-settings", "{.data.greeting}") == "bonjour"

    result = gitops_rollback(repo=example_repo.block_name, app="web", to=first)

    assert [c.sha for c in result.reverted] == [greeted, scaled]
    assert result.pushed and result.to == first
    git("pull", "--quiet", "origin", "main", cwd=example_repo.work)
    log = git("log", "--format=%H %P%n%B", "-1", cwd=example_repo.work)
    assert log.startswith(f"{result.commit} {greeted}")  # one commit on top of the branch
    assert f"Roll back app web to {first[:12]}" in log and greeted[:12] in log and scaled[:12] in log
    assert on_branch(example_repo, REPLICAS) == original[REPLICAS]
    assert on_branch(example_repo, CONFIGMAP) == original[CONFIGMAP]
    assert "name: tiny" in on_branch(example_repo, WIDGETS)  # another app's change stays
    assert git("log", "--format=%H", f"{widgets}..main", "--", "apps/widgets", cwd=example_repo.work) == ""

    assert result.sync.ok and {(r.app, r.status.value) for r in result.sync.results} == {("web", "succeeded")}
    assert result.sync.revision == result.commit
    assert live(staging, "configmap", "web-settings", "{.data.greeting}") == "hello"
    assert live(staging, "deployment", "web", "{.spec.replicas}") == "1"

    again = gitops_rollback(repo=example_repo.block_name, app="web", to=first)  # a rerun: Git already matches
    assert not again.pushed and again.commit == result.commit and again.sync.ok


def test_unknown_and_non_ancestor_revisions_and_nothing_to_revert_are_refused(example_repo, prefect_api):
    head = git("rev-parse", "HEAD", cwd=example_repo.work)
    with pytest.raises(RollbackError, match=r"revision 'f{40}' is unknown"):
        gitops_rollback(repo=example_repo.block_name, app="web", to="f" * 40)

    git("checkout", "--quiet", "-b", "side", cwd=example_repo.work)
    side = example_repo.commit({CONFIGMAP: example_repo.read(CONFIGMAP).replace("hello", "hi")}, "a side branch")
    git("push", "--quiet", "origin", "side", cwd=example_repo.work)
    git("checkout", "--quiet", "main", cwd=example_repo.work)
    with pytest.raises(RollbackError, match=rf"\({side[:12]}\) is not an ancestor of main"):
        gitops_rollback(repo=example_repo.block_name, app="web", to="side")

    example_repo.commit({WIDGETS: example_repo.read(WIDGETS) + "# a comment\n"}, "widgets only")
    with pytest.raises(RollbackError, match=r"no commit after .* changed app web"):
        gitops_rollback(repo=example_repo.block_name, app="web", to=head)
    with pytest.raises(RollbackError, match=r"no app named 'nope'"):
        gitops_rollback(repo=example_repo.block_name, app="nope", to=head)
    assert git("rev-parse", "main", cwd=example_repo.bare) == git("rev-parse", "HEAD", cwd=example_repo.work)


def test_cli_refuses_with_the_reason_and_exit_code_1(example_repo, prefect_api):
    app = typer.Typer()
    app.command("rollback")(rollback_command)
    app.command("unused")(lambda: None)  # two commands: typer keeps `rollback` as a subcommand
    out = CliRunner().invoke(app, ["rollback", "--repo", example_repo.block_name, "--app", "web", "--to", "nope"])
    assert out.exit_code == 1
    assert "rollback refused" in out.output and "'nope' is unknown" in out.output


def test_a_push_rejected_because_the_branch_moved_is_rebased_and_retried(example_repo, prefect_api):
    from blocks import GitRepository

    with working_clone(GitRepository.load(example_repo.block_name)) as clone:
        (clone.path / "NOTES.md").write_text("rolled back\n")
        clone.git("add", "NOTES.md")
        clone.commit("a note")
        moved = example_repo.commit({"README.md": "meanwhile\n"}, "pushed meanwhile")
        pushed = clone.push()
    assert git("rev-parse", "main", cwd=example_repo.bare) == pushed
    assert git("rev-parse", f"{pushed}~1", cwd=example_repo.bare) == moved
