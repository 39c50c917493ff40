"""`gitops_rollback`: put one app back as it was at an earlier revision, the GitOps
way - in Git first. In a throwaway clone of the tracked branch, the commits after
that revision that changed the app's files are reverted (newest first) into one
commit naming the app and the revision, which is pushed; then the app is synced
at that commit. Git keeps telling the truth: the next scheduled sync applies the
same state instead of undoing the rollback.

The clone goes through the repository block's credentials (token or SSH key), as
every other Git call does (tasks/git.py). Only the app's files change: what the
reverted commits changed elsewhere is kept as it is at the branch head."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import typer
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from rich.console import Console

from blocks import GitRepository
from engine.report import SyncReport
from flows.sync import SyncFailed, gitops_sync
from engine.appspec import CLUSTER_PLACEHOLDER, App, AppSpec, load_appspec
from engine.git import Failure, GitError, _session, _Session, remote_location
from engine.manifests import relative_name
from engine.problems import ProblemsFound
from engine.render import _KustomizeIndex

PUSH_ATTEMPTS = 3
# Who the rollback commit is by; git's user config is deliberately not read (tasks/git.py).
IDENTITY = {"GIT_AUTHOR_NAME": "prefect-gitops", "GIT_AUTHOR_EMAIL": "prefect-gitops@localhost",
            "GIT_COMMITTER_NAME": "prefect-gitops", "GIT_COMMITTER_EMAIL": "prefect-gitops@localhost"}

err = Console(stderr=True)
log = logging.getLogger(__name__)


class RollbackError(Exception):
    """The rollback was refused or could not be made in Git; nothing was pushed."""


class RollbackIncomplete(Exception):
    """Git is rolled back (the commit is pushed) but the app's sync failed."""

    def __init__(self, result: "RollbackResult", failure: SyncFailed):
        super().__init__(f"{result.app}: rolled back in Git by {result.commit[:12]}, but the sync failed: {failure}")
        self.result = result


@dataclass(frozen=True)
class Reverted:
    sha: str
    subject: str


@dataclass
class RollbackResult:
    app: str
    to: str  # the full SHA rolled back to
    commit: str  # the rollback commit on the branch
    reverted: list[Reverted] = field(default_factory=list)  # newest first
    pushed: bool = False  # False: Git was already as at `to` (a rerun), only synced
    sync: SyncReport | None = None

    def markdown(self) -> str:
        done = (f"Commit `{self.commit[:12]}` reverts" if self.pushed else
                f"Git already matched `{self.to[:12]}` at `{self.commit[:12]}` (a rerun), only synced; "
                f"reverted before:")
        lines = [f"# Rollback of `{self.app}` to `{self.to[:12]}`", "",
                 f"{done} {len(self.reverted)} commit(s):", ""]
        lines += [f"- `{c.sha[:12]}` {c.subject}" for c in self.reverted]
        return "\n".join(lines)


# --- the flow -----------------------------------------------------------------


@flow(name="gitops-rollback", log_prints=False)
def gitops_rollback(repo: str, app: str, to: str) -> RollbackResult:
    """Revert in Git what changed `app` after revision `to`, push, and sync the app."""
    result = rollback_in_git(GitRepository.load(repo), app, to)
    create_markdown_artifact(key=f"gitops-rollback-{app}", markdown=result.markdown(),
                             description=f"rollback of {app} to {result.to[:12]}")
    try:
        result.sync = gitops_sync.fn(repo=repo, apps=[app], revision=result.commit)
    except SyncFailed as failure:
        result.sync = failure.report
        raise RollbackIncomplete(result, failure) from failure
    return result


@task(name="git-rollback", task_run_name="roll {app} back to {to}", cache_policy=NO_CACHE)
def rollback_in_git(repo: GitRepository, app: str, to: str, why: str = "") -> RollbackResult:
    """The revert commit, made and pushed in a working clone of the tracked branch.
    `why` is added to the commit message (auto-revert names its run and reason)."""
    if repo.require_signed_commits:
        raise RollbackError("the repository requires signed commits, and prefect-gitops cannot sign "
                            "its rollback commit: revert by hand and push a signed commit")
    logger = get_run_logger()
    with working_clone(repo) as clone:
        spec = _appspec(clone.path)
        target = _app(spec, app)
        to_sha = clone.resolve(to)
        head = clone.head()
        if not clone.is_ancestor(to_sha, head):
            raise RollbackError(f"{_named(to, to_sha)} is not an ancestor of {repo.branch} ({head[:12]}): "
                                f"only a revision the branch went through can be rolled back to")
        paths = app_pathspecs(clone.path, target)
        commits = clone.commits_after(to_sha, paths)
        if not commits:
            raise RollbackError(f"no commit after {_named(to, to_sha)} changed app {app} "
                                f"({', '.join(paths)}): nothing to roll back")
        logger.info("rolling %s back to %s: reverting %s", app, to_sha[:12], ", ".join(c.sha[:12] for c in commits))
        result = RollbackResult(app, to_sha, head, commits)
        if clone.same_as(to_sha, paths):  # e.g. a rerun after the push: sync only
            logger.info("%s is already as at %s in Git", app, to_sha[:12])
            return result
        clone.revert(commits, keep_only=paths)
        clone.commit(_message(app, to, to_sha, commits) + (f"\n{why}\n" if why else ""))
        result.commit, result.pushed = clone.push(), True
        logger.info("pushed %s to %s", result.commit[:12], repo.branch)
        return result


def _appspec(root: Path) -> AppSpec:
    try:
        return load_appspec(root)
    except ProblemsFound as found:
        raise RollbackError(f"gitops.yaml at the branch head is invalid: {found}") from found


def _app(spec: AppSpec, name: str) -> App:
    try:
        return spec.app(name)
    except KeyError:
        known = ", ".join(a.name for a in spec.apps)
        raise RollbackError(f"no app named {name!r} in gitops.yaml (apps: {known})") from None


def _named(revision: str, sha: str) -> str:
    """How messages name the revision: its SHA, or the name given and its SHA."""
    return sha[:12] if sha.startswith(revision.lower()) else f"{revision} ({sha[:12]})"


def _message(app: str, to: str, to_sha: str, commits: list[Reverted]) -> str:
    named = _named(to, to_sha)
    body = "\n".join(f"  {c.sha[:12]} {c.subject}" for c in commits)
    return (f"Roll back app {app} to {named}\n\nRevert {len(commits)} commit(s) after {to_sha} that changed "
            f"app {app}, newest first:\n{body}\n")


# --- the app's files ------------------------------------------------------------


def app_pathspecs(root: Path, app: App) -> list[str]:
    """Git pathspecs of every file the app renders from: its path for every cluster
    (`{cluster}` as a wildcard, so clusters selected by labels count too), plus the
    local Kustomize bases and components and the Helm values files it reads."""
    patterns = list(app.paths.values()) if app.paths else [(app.path or "").replace(CLUSTER_PLACEHOLDER, "*")]
    root = root.resolve()
    directories = [d.resolve() for p in patterns for d in sorted(root.glob(p)) if d.is_dir()]
    found = set(patterns)
    for directory in directories:
        if not directory.is_relative_to(root):
            continue  # render refuses such paths; nothing in Git to revert there
        index = _KustomizeIndex(root)  # kustomize's own notion of what a directory builds on
        index.visit(directory)
        found |= {relative_name(d, root) for d in index.visited}
        for values in (app.helm.values_files if app.helm else []):
            file = os.path.normpath(directory / values.replace(CLUSTER_PLACEHOLDER, "*"))
            found.add(relative_name(Path(file), root))
    # A directory the `{cluster}` wildcard covers already need not be named twice.
    return sorted(p for p in found if p and not p.startswith("..")
                  and (p in patterns or not any(fnmatch.fnmatch(p, q) for q in patterns)))


# --- the working clone -----------------------------------------------------------


@dataclass
class WorkingClone:
    """A clone of the tracked branch in a private temp dir, driven through the
    block's credentials; removed when the `working_clone` block ends."""

    session: _Session
    path: Path
    branch: str

    def git(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.session.git("-C", self.path, *args, check=check, env=IDENTITY)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").stdout.strip()

    def resolve(self, revision: str) -> str:
        """A branch, tag or (short) SHA known to the clone, as a full SHA."""
        if not revision.strip():
            raise RollbackError("no revision given to roll back to")
        for name in (revision, f"refs/remotes/origin/{revision}"):
            found = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}", check=False)
            if found.returncode == 0:
                return found.stdout.strip()
            if "ambiguous" in found.stderr:
                raise RollbackError(f"short SHA {revision!r} is ambiguous; give more digits")
        raise RollbackError(f"revision {revision!r} is unknown in {self.session.url} "
                            f"(no such branch, tag or commit)")

    def is_ancestor(self, sha: str, of: str) -> bool:
        return self.git("merge-base", "--is-ancestor", sha, of, check=False).returncode == 0

    def commits_after(self, sha: str, paths: list[str]) -> list[Reverted]:
        """Commits reachable from HEAD and not from `sha` that touched `paths`, newest first."""
        out = self.git("log", "--no-merges", "--format=%H%x00%s", f"{sha}..HEAD", "--", *paths).stdout
        return [Reverted(*line.split("\0", 1)) for line in out.splitlines() if line]

    def same_as(self, sha: str, paths: list[str]) -> bool:
        return self.git("diff", "--quiet", sha, "HEAD", "--", *paths, check=False).returncode == 0

    def revert(self, commits: list[Reverted], keep_only: list[str]) -> None:
        """Revert the commits into the index, then put back, from HEAD, whatever
        they changed outside `keep_only`: other apps are not rolled back with this one."""
        for commit in commits:
            reverted = self.git("revert", "--no-commit", commit.sha, check=False)
            if reverted.returncode != 0:
                raise RollbackError(f"reverting {commit.sha[:12]} ({commit.subject}) conflicts with later "
                                    f"commits: {_last_line(reverted.stderr or reverted.stdout)}")
        excluded = [f":(exclude){p}" for p in keep_only]
        outside = self.git("diff", "--cached", "--name-only", "HEAD", "--", ".", *excluded).stdout.split()
        if outside:
            self.git("restore", "--source=HEAD", "--staged", "--worktree", "--", *outside)

    def commit(self, message: str) -> None:
        self.git("commit", "--quiet", "--no-verify", "-m", message)

    def push(self, attempts: int = PUSH_ATTEMPTS) -> str:
        """Push HEAD to the tracked branch; when the branch moved meanwhile, fetch,
        rebase onto it and try again, at most `attempts` times. The pushed SHA."""
        for attempt in range(1, attempts + 1):
            pushed = self.git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", check=False)
            if pushed.returncode == 0:
                return self.head()
            if not _rejected(pushed.stderr):
                raise self.session.error(f"git push to {self.branch}", Failure.FAILED, pushed.stderr)
            if attempt == attempts:
                break
            log.info("%s moved meanwhile; rebasing and pushing again", self.branch)
            self.git("fetch", "--quiet", "origin", self.branch)
            rebased = self.git("rebase", "--quiet", f"origin/{self.branch}", check=False)
            if rebased.returncode != 0:
                raise RollbackError(f"commits pushed to {self.branch} meanwhile conflict with the rollback: "
                                    f"{_last_line(rebased.stderr or rebased.stdout)}")
        raise RollbackError(f"{self.branch} kept moving: the push was rejected {attempts} times")


@contextlib.contextmanager
def working_clone(repo: GitRepository) -> Iterator[WorkingClone]:
    with _session(repo) as session:
        path = session.tmp / "work"
        session.git("clone", "--quiet", "--branch", repo.branch, remote_location(repo.url), path)
        yield WorkingClone(session, path, repo.branch)


def _rejected(stderr: str) -> bool:
    """A non-fast-forward rejection (the branch moved), not a hook or permission refusal."""
    return "non-fast-forward" in stderr or "fetch first" in stderr


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "git failed"


# --- the command line -------------------------------------------------------------


def rollback_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name."),
    app: str = typer.Option(..., "--app", help="The app to roll back."),
    to: str = typer.Option(..., "--to", help="The revision (SHA, tag) to roll the app back to."),
) -> None:
    """Roll an app back: revert in Git the commits after a revision that changed it, push, sync it."""
    try:
        result = gitops_rollback(repo=repo, app=app, to=to)
    except (RollbackError, GitError) as refused:
        err.print(f"[red]rollback refused:[/red] {refused}", highlight=False)
        raise typer.Exit(1)
    except RollbackIncomplete as incomplete:
        err.print(f"[red]error:[/red] {incomplete}", highlight=False)
        raise typer.Exit(1)
    err.print(f"[green]rolled back[/green] {app} to {result.to[:12]} by {result.commit[:12]} "
              f"(reverted {len(result.reverted)} commit(s)); synced: "
              f"{'; '.join(f'{r.cluster}: {r.status.value}' for r in result.sync.results)}", highlight=False)
