"""Fetch the desired state from Git: a cached bare clone per repository URL,
a revision resolved to one commit SHA (verified when the block asks for signed
commits), and a read-only tree of exactly that commit for the render stage.

Credentials never reach an argv, a URL, a log line or an exception message:
the token goes to git through a credential helper that reads a 0600 file, the
SSH key through a 0600 key file, both in a private temp dir removed after each
call. Every git process runs with a timeout, in its own process group (so ssh
and remote helpers die with it), isolated from the user's and system's git
configuration, and never prompts.

GitPython is the object layer: `_Session.open` gives a `git.Repo` whose every
git process goes through this module's runner (`_SessionGit`): the session's
environment instead of os.environ, its own process group, and for one-shot
commands the timeout with the group kill. So `repo.git.push(...)` is as safe
as `_Session.git("push", ...)`. What stays on the git command, and why:
- network operations (fetch, clone, push) are run as commands, never through
  GitPython's `Remote.fetch/push` or `Repo.clone_from`: those stream progress
  from a live process outside any timeout, and GitPython's `kill_after_timeout`
  kills the children `pgrep` finds, not the process group (ssh, remote helpers);
- `rev-parse --verify` resolves revisions: git's own rules and its "ambiguous"
  answer for short SHAs, which GitPython's Python rev_parse does not reproduce;
- `read-tree` + `checkout-index` write a tree aside with a private index, and
  `verify-commit` checks signatures with a throwaway GnuPG home or signers file;
- commits are made with `git commit`, not `IndexFile.commit`, which reads the
  user's and system's git config in Python."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

from git import Git as GitCommand
from git import GitCommandError, Repo
from pydantic import SecretStr

from prefect_gitops.engine.home import gitops_home
from prefect_gitops.engine.source.children import dying_with_parent

log = logging.getLogger(__name__)

# Transports git may use; "ext::" and other remote helpers could run commands.
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
SSH_CONNECT_TIMEOUT_S = 15
_STDERR_LINES = 8

_SCHEME_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP_LIKE = re.compile(r"^[^/:]+:")  # [user@]host:path - a colon before any slash
_CREDENTIALS_IN_TEXT = re.compile(r"(?<=://)[^/@\s'\"]+@")
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")
# Refs cannot contain these (git check-ref-format); a leading '-' would read as an option.
_BAD_REVISION = re.compile(r"^-|[\s~^:?*\[\\]|\.\.|@\{|[\x00-\x1f\x7f]")


class Failure(str, Enum):
    """Why a git operation failed, for callers that react differently (retries)."""

    UNREACHABLE = "cannot reach the repository"
    MISSING = "no repository there"
    AUTHENTICATION = "authentication failed"
    HOST_KEY = "the server's SSH host key is not trusted"
    NOT_FOUND = "revision not found"
    TIMEOUT = "timed out"
    UNVERIFIED = "commit signature refused"
    INVALID = "invalid request"
    FAILED = "git failed"


class GitError(Exception):
    """A Git source failure; the message names the URL (without credentials)."""

    def __init__(self, message: str, failure: Failure = Failure.FAILED):
        super().__init__(message)
        self.failure = failure

    @property
    def retryable(self) -> bool:
        return self.failure in (Failure.UNREACHABLE, Failure.TIMEOUT)


@dataclass(frozen=True)
class FetchResult:
    url: str  # without credentials
    sha: str
    tree: Path  # read-only working tree of `sha`
    ref: str  # what the revision matched: refs/heads/x, refs/tags/x, or the SHA itself


# --- URLs -------------------------------------------------------------------


def public_url(url: str) -> str:
    """The URL as it may be shown: no password, and no user at all for HTTP(S),
    where the user part often is a token."""
    if not _SCHEME_URL.match(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _CREDENTIALS_IN_TEXT.sub("", url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username if parts.scheme not in ("http", "https") else None
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def remote_location(url: str) -> str:
    """What git is given: URLs as they are, local paths made absolute, so the
    cache key does not depend on the working directory."""
    if _SCHEME_URL.match(url) or _SCP_LIKE.match(url):
        return url
    return str(Path(url).expanduser().resolve())


def _check_url(url: str) -> None:
    shown = public_url(url)
    if _REMOTE_HELPER.match(url):
        raise GitError(f"{shown}: remote helpers (<transport>::) are not supported", Failure.INVALID)
    if not _SCHEME_URL.match(url):
        return
    parts = urlsplit(url)
    if parts.scheme not in ALLOWED_PROTOCOLS.split(":"):
        raise GitError(f"{shown}: unsupported URL scheme {parts.scheme!r}", Failure.INVALID)
    if parts.password is not None or (parts.scheme in ("http", "https") and "@" in parts.netloc):
        raise GitError(
            f"{shown}: credentials in the URL are not accepted; "
            "put the token in the block's token field",
            Failure.INVALID,
        )


def cache_dir(url: str) -> Path:
    """$GITOPS_HOME/git/<sha256 of url>: the bare clone and the trees of one repository."""
    digest = hashlib.sha256(remote_location(url).encode()).hexdigest()
    return gitops_home() / "git" / digest


# --- running git ------------------------------------------------------------


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _run(argv: list[str], env: dict[str, str], timeout: float,
         input: str | None = None, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; on timeout the whole group dies
    (git's ssh and git-remote-http children too), and with this process if it is killed."""
    proc = subprocess.Popen(
        dying_with_parent(argv), env=env, cwd=cwd, text=True, encoding="utf-8", errors="replace",
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:
        _kill_group(proc)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


_FAILURE_HINTS: list[tuple[Failure, tuple[str, ...]]] = [
    (Failure.HOST_KEY, ("host key verification failed",)),
    (Failure.AUTHENTICATION, (
        "authentication failed", "could not read username", "could not read password",
        "permission denied (publickey", "permission denied, please try again",
        "returned error: 401", "returned error: 403", "invalid username or password",
    )),
    # The server answered that there is no repository: asking again will not help.
    (Failure.MISSING, (
        "does not appear to be a git repository", "no such repository", "repository not found", "not found",
    )),
    (Failure.UNREACHABLE, (
        "could not resolve host", "could not resolve hostname", "connection refused",
        "unable to connect", "failed to connect", "couldn't connect", "connection timed out",
        "no route to host", "network is unreachable", "could not read from remote repository",
        "the remote end hung up", "unable to access", "connection reset",
    )),
]


def _classify(stderr: str) -> Failure:
    text = stderr.lower()
    for failure, hints in _FAILURE_HINTS:
        if any(hint in text for hint in hints):
            return failure
    return Failure.FAILED



@dataclass(frozen=True)
class GitSource:
    """A repository as the engine needs it: where it is, the branch followed, how
    to authenticate and which signers to trust (the Git repository block turns
    itself into one). Secrets stay SecretStr: never in a repr or a log line."""

    url: str
    branch: str = "main"
    username: str = "git"
    token: SecretStr | None = None
    ssh_private_key: SecretStr | None = None
    ssh_known_hosts: str | None = None
    trusted_ssh_signers: tuple[str, ...] = ()
    trusted_gpg_keys: tuple[str, ...] = ()
    require_signed_commits: bool = False
    timeout_seconds: float = 120


@dataclass
class _Session:
    """One call against one repository: where its cache is, and an environment
    for git with the block's credentials wired in through private files."""

    repo: GitSource
    tmp: Path
    env: dict[str, str]
    secrets: list[str]
    timeout: float

    @property
    def url(self) -> str:
        return public_url(self.repo.url)

    @property
    def root(self) -> Path:
        return cache_dir(self.repo.url)

    @property
    def git_dir(self) -> Path:
        return self.root / "repo.git"

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _CREDENTIALS_IN_TEXT.sub("", text)

    def error(self, what: str, failure: Failure, stderr: str = "", explain: bool = True) -> GitError:
        """`<url>: <what>: <failure>` and the last lines of git's stderr, scrubbed."""
        lines = [ln for ln in self.scrub(stderr).strip().splitlines() if ln.strip()]
        detail = "".join(f"\n  {ln}" for ln in lines[-_STDERR_LINES:])
        reason = f": {failure.value}" if explain else ""
        return GitError(f"{self.url}: {what}{reason}{detail}", failure)

    def run(self, argv: list[str], env: dict[str, str] | None = None, input: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run git under the session: its environment, timeout and group kill."""
        try:
            return _run(argv, {**self.env, **(env or {})}, self.timeout, input, cwd)
        except subprocess.TimeoutExpired:
            what = f"git {_subcommand(argv)} after {self.timeout:g} s"
            raise self.error(what, Failure.TIMEOUT) from None
        except FileNotFoundError:
            raise GitError("git is not installed (not found on PATH)") from None

    def git(self, *args: str | Path, check: bool = True, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["git", *map(str, args)]
        result = self.run(argv, env, input)
        if check and result.returncode != 0:
            raise self.error(f"git {_subcommand(argv)}", _classify(result.stderr), result.stderr)
        return result

    def open(self, path: Path) -> Repo:
        """A GitPython repository at `path` whose git processes run under this session."""
        # GitPython itself (in Python, before any git process) follows these.
        inherited = [k for k in ("GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR", "GIT_WORK_TREE") if k in os.environ]
        if inherited:
            raise GitError(f"{', '.join(inherited)} is set in the environment and would redirect "
                           f"the repository; unset it", Failure.INVALID)
        return _SessionRepo(path, self)


class CommandFailed(GitCommandError):
    """A git command run through GitPython exited non-zero; `output` is what it
    said (stderr, else stdout), scrubbed of the session's secrets."""

    def __init__(self, command: list[str], status: int, output: str):
        super().__init__(command, status, output)
        self.output = output


class _SessionGit(GitCommand):
    """GitPython's command runner bound to a session: the session's environment
    (GitPython's would start from os.environ, inherited GIT_* included), its own
    process group; one-shot commands also get the timeout through `_run`. The
    persistent `cat-file --batch` readers of the object database are local and
    live as long as the Repo: they get the environment, not a timeout."""

    def __init__(self, working_dir: str | None, session: _Session):
        super().__init__(working_dir)
        self._session = session

    def execute(self, command, istream=None, with_extended_output=False, with_exceptions=True,
                as_process=False, env=None, strip_newline_in_stdout=True, **unsupported):
        argv = [str(a) for a in command]
        if as_process:
            proc = subprocess.Popen(dying_with_parent(argv), env={**self._session.env, **(env or {})},
                                    cwd=self._working_dir,
                                    stdin=istream or subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
            return self.AutoInterrupt(proc, argv)
        if istream is not None or unsupported.get("output_stream") or unsupported.get("stdout_as_string") is False:
            raise GitError(f"git {_subcommand(argv)}: streams are not supported by the session runner")
        result = self._session.run(argv, env, cwd=self._working_dir)
        out, err = result.stdout, result.stderr.removesuffix("\n")
        if strip_newline_in_stdout:
            out = out.removesuffix("\n")
        if with_exceptions and result.returncode != 0:
            raise CommandFailed(argv, result.returncode, self._session.scrub(err or out))
        return (result.returncode, out, err) if with_extended_output else out


class _SessionRepo(Repo):
    def __init__(self, path: Path, session: _Session):
        self._session = session
        super().__init__(path)

    def GitCommandWrapperType(self, working_dir: str | None) -> _SessionGit:  # noqa: N802
        """Repo.__init__ makes `self.git` (also the object database's runner) with this."""
        return _SessionGit(working_dir, self._session)


def _subcommand(argv: list[str]) -> str:
    """The git subcommand of an argv, skipping global options and their values."""
    takes_value = {"-C", "-c", "--git-dir", "--work-tree"}
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in takes_value else 1
    return argv[i] if i < len(argv) else "?"


def _base_env() -> dict[str, str]:
    # Inherited GIT_* variables (GIT_DIR from a hook, GIT_TRACE_CURL...) could
    # redirect or leak; system and global config could add helpers or rewrites.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GIT_") and k not in ("SSH_ASKPASS", "GNUPGHOME")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_ALLOW_PROTOCOL=ALLOWED_PROTOCOLS,
        LC_ALL="C",  # English messages, which _classify reads
    )
    return env


def _config_env(entries: list[tuple[str, str]]) -> dict[str, str]:
    """Config entries for git through the environment (not argv)."""
    env = {"GIT_CONFIG_COUNT": str(len(entries))}
    for i, (key, value) in enumerate(entries):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def _http_origin(url: str) -> str | None:
    if not url.startswith(("http://", "https://")):
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _ssh_command(repo: GitSource, tmp: Path) -> str:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}"]
    if repo.ssh_private_key is not None:
        key = repo.ssh_private_key.get_secret_value().replace("\r\n", "\n").strip() + "\n"
        cmd += ["-i", str(_write_private(tmp / "id_key", key)),
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
    if repo.ssh_known_hosts:
        known = _write_private(tmp / "known_hosts", repo.ssh_known_hosts.strip() + "\n")
        cmd += ["-o", f"UserKnownHostsFile={known}", "-o", f"GlobalKnownHostsFile={os.devnull}",
                "-o", "StrictHostKeyChecking=yes"]
    return shlex.join(cmd)


@contextlib.contextmanager
def _session(repo: GitSource, timeout: float | None = None) -> Iterator[_Session]:
    _check_url(repo.url)
    tmp = Path(tempfile.mkdtemp(prefix="gitops-git-"))  # mode 0700
    try:
        config = [("credential.helper", "")]  # no helper may store or offer other credentials
        secrets: list[str] = []
        origin = _http_origin(repo.url)
        if repo.token is not None and origin:
            token = repo.token.get_secret_value()
            secrets += [token, base64.b64encode(f"{repo.username}:{token}".encode()).decode()]
            creds = _write_private(tmp / "credentials", f"username={repo.username}\npassword={token}\n")
            # A shell helper reading the file: only its path is in git's environment.
            helper = f"!f() {{ cat >/dev/null; test \"$1\" = get && cat {shlex.quote(str(creds))}; }}; f"
            config.append((f"credential.{origin}.helper", helper))
            if origin.startswith("http://") and urlsplit(origin).hostname not in ("127.0.0.1", "localhost", "::1"):
                log.warning("%s: sending a token over plain HTTP", public_url(repo.url))
        env = _base_env() | _config_env(config) | {"GIT_SSH_COMMAND": _ssh_command(repo, tmp),
                                                   "GIT_SSH_VARIANT": "ssh"}
        yield _Session(repo, tmp, env, secrets, timeout or repo.timeout_seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One writer per cached repository, across threads and processes."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- fetch and resolve ----------------------------------------------------


def _init_cache(s: _Session) -> None:
    """A bare clone mirroring the remote's branches and tags; built aside and
    renamed into place so a half-made one is never used."""
    if (s.git_dir / "HEAD").exists():
        return
    staging = s.root / f"repo.git.init-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    s.git("init", "--quiet", "--bare", staging)
    with s.open(staging) as repo, repo.config_writer() as config:
        config.set_value('remote "origin"', "url", remote_location(s.repo.url))
        config.set_value('remote "origin"', "fetch", "+refs/heads/*:refs/heads/*")
        config.add_value('remote "origin"', "fetch", "+refs/tags/*:refs/tags/*")
        config.set_value('remote "origin"', "tagOpt", "--no-tags")
    staging.rename(s.git_dir)


def _update(s: _Session) -> None:
    """Fetch every branch and tag into the cache: incremental after the first time."""
    _init_cache(s)
    log.info("fetching %s", s.url)
    s.git("--git-dir", s.git_dir, "fetch", "--quiet", "--prune", "--no-write-fetch-head", "origin")


def _rev_parse(s: _Session, rev: str) -> str | None:
    result = s.git("--git-dir", s.git_dir, "rev-parse", "--verify", "--end-of-options",
                   f"{rev}^{{commit}}", check=False)
    if result.returncode == 0:
        return result.stdout.strip()
    if "ambiguous" in result.stderr:
        raise GitError(f"{s.url}: short SHA {rev!r} is ambiguous; give more digits", Failure.INVALID)
    return None


def _resolve(s: _Session, revision: str) -> tuple[str, str]:
    """(sha, ref): a branch, then a tag, then a full or short SHA."""
    if not revision or _BAD_REVISION.search(revision):
        raise GitError(f"{s.url}: {revision!r} is not a valid revision", Failure.INVALID)
    for ref in (f"refs/heads/{revision}", f"refs/tags/{revision}"):
        if sha := _rev_parse(s, ref):
            return sha, ref
    if _HEX.match(revision):
        sha = _rev_parse(s, revision.lower())
        if sha is None and len(revision) == 40:
            # A commit no branch or tag reaches; servers may still hand it out.
            fetched = s.git("--git-dir", s.git_dir, "fetch", "--quiet", "--no-write-fetch-head",
                            "origin", revision.lower(), check=False)
            sha = _rev_parse(s, revision.lower()) if fetched.returncode == 0 else None
        if sha:
            return sha, sha
    raise GitError(f"{s.url}: revision {revision!r} not found (no such branch, tag or commit)",
                   Failure.NOT_FOUND)


# --- signatures -------------------------------------------------------------


def _signature_kind(s: _Session, sha: str) -> str | None:
    with s.open(s.git_dir) as repo:
        signature = repo.commit(sha).gpgsig
    if not signature:
        return None
    if "-----BEGIN SSH SIGNATURE-----" in signature:
        return "ssh"
    if "-----BEGIN PGP SIGNATURE-----" in signature:
        return "gpg"
    return "other"


def _gnupg_home(s: _Session) -> Path:
    """A throwaway GnuPG home holding only the trusted keys."""
    home = s.tmp / "gnupg"
    home.mkdir(mode=0o700)
    for key in s.repo.trusted_gpg_keys:
        try:
            result = _run(["gpg", "--batch", "--no-tty", "--quiet", "--import"],
                          s.env | {"GNUPGHOME": str(home)}, s.timeout, input=key)
        except FileNotFoundError:
            raise GitError("gpg is not installed; it is needed to verify GPG-signed commits") from None
        except subprocess.TimeoutExpired:
            raise s.error("gpg --import", Failure.TIMEOUT) from None
        if result.returncode != 0:
            raise s.error("a trusted GPG key could not be imported", Failure.INVALID, result.stderr)
    return home


def _stop_gpg_agent(home: Path) -> None:
    if any(home.glob("S.*")) and shutil.which("gpgconf"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["gpgconf", "--kill", "all"], env=_base_env() | {"GNUPGHOME": str(home)},
                           capture_output=True, timeout=10)


def _verify(s: _Session, sha: str) -> None:
    """Refuse a commit that is not signed by one of the block's trusted keys."""
    short = sha[:7]
    kind = _signature_kind(s, sha)
    if kind is None:
        raise GitError(f"{s.url}: commit {short} is not signed", Failure.UNVERIFIED)
    if kind == "other":
        raise GitError(f"{s.url}: commit {short} has an unsupported signature format (only SSH and GPG)",
                       Failure.UNVERIFIED)
    trusted = s.repo.trusted_ssh_signers if kind == "ssh" else s.repo.trusted_gpg_keys
    if not trusted:
        raise GitError(f"{s.url}: commit {short} is signed by an untrusted key "
                       f"(no trusted {kind.upper()} keys configured)", Failure.UNVERIFIED)
    args: list[str | Path] = ["--git-dir", s.git_dir, "verify-commit", "--raw", sha]
    if kind == "ssh":
        signers = _write_private(s.tmp / "allowed_signers", "\n".join(trusted) + "\n")
        result = s.git("-c", f"gpg.ssh.allowedSignersFile={signers}", *args, check=False)
    else:
        home = _gnupg_home(s)
        try:
            result = s.git(*args, check=False, env={"GNUPGHOME": str(home)})
        finally:
            _stop_gpg_agent(home)
    if result.returncode == 0:
        log.info("%s: commit %s has a good %s signature by a trusted key", s.url, short, kind.upper())
        return
    output = result.stderr + result.stdout
    untrusted = ("No principal matched", "NO_PUBKEY", "ERRSIG")
    reason = "is signed by an untrusted key" if any(u in output for u in untrusted) else "has a bad signature"
    raise s.error(f"commit {short} {reason}", Failure.UNVERIFIED, output, explain=False)


# --- trees ----------------------------------------------------------------


def _refuse_escaping_symlinks(s: _Session, tree: Path, sha: str) -> None:
    """A symlink out of the repository would let a commit pull host files into
    rendered manifests."""
    root = tree.resolve()
    for path in tree.rglob("*"):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise GitError(f"{s.url}: commit {sha[:7]} has a symlink leaving the repository: "
                           f"{path.relative_to(tree)} -> {os.readlink(path)}", Failure.INVALID)


def _make_read_only(tree: Path) -> None:
    """Fixed modes, so the tree is the same whatever the umask, and files are
    not writable by accident; directories stay writable so it can be removed."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o555 if path.stat().st_mode & 0o100 else 0o444)


def _materialize(s: _Session, sha: str) -> Path:
    """trees/<sha>: the files of that commit, checked out aside and renamed
    into place, so an existing tree is always complete."""
    tree = s.root / "trees" / sha
    if tree.is_dir():
        return tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=tree.parent))
    try:
        index = {"GIT_INDEX_FILE": str(s.tmp / f"index-{sha}")}
        s.git("--git-dir", s.git_dir, "read-tree", sha, env=index)
        s.git("--git-dir", s.git_dir, "--work-tree", staging, "checkout-index", "--all", "--force", env=index)
        _refuse_escaping_symlinks(s, staging, sha)
        _make_read_only(staging)
        staging.rename(tree)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return tree


# --- the stage ------------------------------------------------------------


def resolve(repo: GitSource, revision: str | None = None, *, timeout: float | None = None) -> str:
    """Fetch, then the full SHA of `revision` (a branch, tag, full or short SHA;
    None: the block's branch), verified when the block requires signed commits."""
    with _session(repo, timeout) as s, _locked(s.root):
        _update(s)
        sha, _ = _resolve(s, revision or repo.branch)
        if repo.require_signed_commits:
            _verify(s, sha)
    return sha


def checkout(repo: GitSource, sha: str, *, timeout: float | None = None) -> Path:
    """A read-only working tree of exactly commit `sha` (reused when present);
    fetches first when the cache does not have the commit yet."""
    with _session(repo, timeout) as s:
        if not _FULL_SHA.match(sha):
            raise GitError(f"{s.url}: checkout needs a full commit SHA, not {sha!r}", Failure.INVALID)
        tree = s.root / "trees" / sha
        if tree.is_dir() and not repo.require_signed_commits:
            return tree
        with _locked(s.root):
            if not (s.git_dir / "HEAD").exists() or _rev_parse(s, sha) is None:
                _update(s)
            if _rev_parse(s, sha) is None:
                raise GitError(f"{s.url}: commit {sha} not found", Failure.NOT_FOUND)
            if repo.require_signed_commits:
                _verify(s, sha)
            return _materialize(s, sha)


def fetch(repo: GitSource, revision: str | None = None, *, timeout: float | None = None) -> FetchResult:
    """Fetch, resolve `revision` to one commit, verify it if required, and check it out."""
    with _session(repo, timeout) as s, _locked(s.root):
        _update(s)
        sha, ref = _resolve(s, revision or repo.branch)
        if repo.require_signed_commits:
            _verify(s, sha)
        tree = _materialize(s, sha)
    log.info("%s: %s is %s", s.url, ref, sha)
    return FetchResult(url=s.url, sha=sha, tree=tree, ref=ref)
