"""Roll one app back in Git: in a throwaway clone of the tracked branch, the
commits after a revision that changed the app's files are reverted (newest
first) into one commit naming the app and the revision, which is pushed. Git
keeps telling the truth: the next sync applies the same state instead of
undoing the rollback. Only the app's files change: what the reverted commits
changed elsewhere is kept as it is at the branch head.

The clone is a GitPython repository driven through the block's credentials by
engine.source.git's session runner (environment, timeouts, process-group kill); the
clone and the push are git commands, as every network operation is there."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from git import Repo

from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.source.git import CommandFailed, GitSource, _classify, _session, _Session, remote_location
from prefect_gitops.engine.source.manifests import relative_name
from prefect_gitops.engine.source.render import _KustomizeIndex
from prefect_gitops.engine.spec.appspec import CLUSTER_PLACEHOLDER, App, AppSpec, load_appspec

if TYPE_CHECKING:
    from prefect_gitops.engine.report import SyncReport

PUSH_ATTEMPTS = 3
# Who the rollback commit is by; git's user config is deliberately not read (engine/source/git.py).
IDENTITY = {"GIT_AUTHOR_NAME": "prefect-gitops", "GIT_AUTHOR_EMAIL": "prefect-gitops@localhost",
            "GIT_COMMITTER_NAME": "prefect-gitops", "GIT_COMMITTER_EMAIL": "prefect-gitops@localhost"}

log = logging.getLogger(__name__)


class RollbackError(Exception):
    """The rollback was refused or could not be made in Git; nothing was pushed."""


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


def rollback_in_git(repo: GitSource, app: str, to: str, why: str = "") -> RollbackResult:
    """The revert commit, made and pushed in a working clone of the tracked branch.
    `why` is added to the commit message (auto-revert names its run and reason)."""
    if repo.require_signed_commits:
        raise RollbackError("the repository requires signed commits, and prefect-gitops cannot sign "
                            "its rollback commit: revert by hand and push a signed commit")
    with working_clone(repo) as clone:
        target = _app(_appspec(clone.path), app)
        to_sha = clone.resolve(to)
        head = clone.head()
        if not clone.repo.is_ancestor(to_sha, head):
            raise RollbackError(f"{_named(to, to_sha)} is not an ancestor of {repo.branch} ({head[:12]}): "
                                f"only a revision the branch went through can be rolled back to")
        paths = app_pathspecs(clone.path, target)
        commits = clone.commits_after(to_sha, paths)
        if not commits:
            raise RollbackError(f"no commit after {_named(to, to_sha)} changed app {app} "
                                f"({', '.join(paths)}): nothing to roll back")
        log.info("rolling %s back to %s: reverting %s", app, to_sha[:12], ", ".join(c.sha[:12] for c in commits))
        result = RollbackResult(app, to_sha, head, commits)
        if clone.same_as(to_sha, paths):  # e.g. a rerun after the push: sync only
            log.info("%s is already as at %s in Git", app, to_sha[:12])
            return result
        clone.revert(commits, keep_only=paths)
        clone.commit(_message(app, to, to_sha, commits) + (f"\n{why}\n" if why else ""))
        result.commit, result.pushed = clone.push(), True
        log.info("pushed %s to %s", result.commit[:12], repo.branch)
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
    repo: Repo
    branch: str

    @property
    def path(self) -> Path:
        return Path(self.repo.working_tree_dir)

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def resolve(self, revision: str) -> str:
        """A branch, tag or (short) SHA known to the clone, as a full SHA."""
        if not revision.strip():
            raise RollbackError("no revision given to roll back to")
        for name in (revision, f"refs/remotes/origin/{revision}"):
            status, sha, err = self.repo.git.rev_parse("--verify", "--quiet", "--end-of-options",
                                                       f"{name}^{{commit}}", with_extended_output=True,
                                                       with_exceptions=False)
            if status == 0:
                return sha
            if "ambiguous" in err:
                raise RollbackError(f"short SHA {revision!r} is ambiguous; give more digits")
        raise RollbackError(f"revision {revision!r} is unknown in {self.session.url} "
                            f"(no such branch, tag or commit)")

    def commits_after(self, sha: str, paths: list[str]) -> list[Reverted]:
        """Commits reachable from HEAD and not from `sha` that touched `paths`, newest first."""
        return [Reverted(c.hexsha, c.summary)
                for c in self.repo.iter_commits(f"{sha}..HEAD", paths, no_merges=True)]

    def same_as(self, sha: str, paths: list[str]) -> bool:
        return not self.repo.commit(sha).diff("HEAD", paths)

    def revert(self, commits: list[Reverted], keep_only: list[str]) -> None:
        """Revert the commits into the index, then put back, from HEAD, whatever
        they changed outside `keep_only`: other apps are not rolled back with this one."""
        for commit in commits:
            try:
                self.repo.git.revert("--no-commit", commit.sha)
            except CommandFailed as conflict:
                raise RollbackError(f"reverting {commit.sha[:12]} ({commit.subject}) conflicts with later "
                                    f"commits: {_last_line(conflict.output)}") from None
        excluded = [f":(exclude){p}" for p in keep_only]
        outside = self.repo.git.diff("--cached", "--name-only", "-z", "HEAD", "--", ".", *excluded)
        if outside:
            self.repo.git.restore("--source=HEAD", "--staged", "--worktree", "--", *outside.split("\0"))

    def commit(self, message: str) -> None:
        self.repo.git.commit("--quiet", "--no-verify", "-m", message, env=IDENTITY)

    def push(self, attempts: int = PUSH_ATTEMPTS) -> str:
        """Push HEAD to the tracked branch; when the branch moved meanwhile, fetch,
        rebase onto it and try again, at most `attempts` times. The pushed SHA."""
        for attempt in range(1, attempts + 1):
            try:
                self.repo.git.push("--quiet", "origin", f"HEAD:refs/heads/{self.branch}")
                return self.head()
            except CommandFailed as refused:
                if not _rejected(refused.output):
                    raise self._error(f"git push to {self.branch}", refused) from None
            if attempt == attempts:
                break
            log.info("%s moved meanwhile; rebasing and pushing again", self.branch)
            try:
                self.repo.git.fetch("--quiet", "origin", self.branch)
            except CommandFailed as failed:
                raise self._error("git fetch", failed) from None
            try:
                self.repo.git.rebase("--quiet", f"origin/{self.branch}", env=IDENTITY)
            except CommandFailed as conflict:
                raise RollbackError(f"commits pushed to {self.branch} meanwhile conflict with the rollback: "
                                    f"{_last_line(conflict.output)}") from None
        raise RollbackError(f"{self.branch} kept moving: the push was rejected {attempts} times")

    def _error(self, what: str, failed: CommandFailed) -> Exception:
        """A network failure as engine.source.git reports it: classified, URL named, scrubbed."""
        return self.session.error(what, _classify(failed.output), failed.output)


@contextlib.contextmanager
def working_clone(repo: GitSource) -> Iterator[WorkingClone]:
    with _session(repo) as session:
        path = session.tmp / "work"
        session.git("clone", "--quiet", "--branch", repo.branch, remote_location(repo.url), path)
        with session.open(path) as clone:
            yield WorkingClone(session, clone, repo.branch)


def _rejected(stderr: str) -> bool:
    """A non-fast-forward rejection (the branch moved), not a hook or permission refusal."""
    return "non-fast-forward" in stderr or "fetch first" in stderr


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "git failed"
