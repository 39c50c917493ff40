"""The Git source stage against real remotes on loopback: git daemon, git
http-backend behind basic auth, and sshd with key-only authentication."""

from __future__ import annotations

import hashlib
import logging
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from prefect_gitops.blocks.git_repository import GitRepository
from git_remotes import (  # noqa: F401  (fixtures)
    HTTP_TOKEN, free_port, git_base, git_daemon, gitops_home, gpg_signer_factory, http_remote,
    run, ssh_keygen, ssh_remote, ssh_signer_factory, upstream,
)
from prefect_gitops.engine.source.git import (CommandFailed, Failure, GitError, GitSource, _session, checkout, fetch, public_url,
                        remote_location, resolve)

pytestmark = pytest.mark.timeout(60)


def file_url(upstream) -> str:
    return f"file://{upstream.bare}"


def loose_objects(git_dir: Path) -> int:
    out = run("git", "--git-dir", git_dir, "count-objects", "-v")
    counts = dict(line.split(": ") for line in out.splitlines())
    return int(counts["count"]) + int(counts["in-pack"])


# --- resolve, fetch, checkout -------------------------------------------------


def test_resolves_branch_tags_and_shas(upstream, git_daemon, gitops_home):
    first = upstream.head()
    upstream.tag("v1")
    upstream.tag("v1-annotated", "release 1")
    upstream.git("branch", "feature", first)
    second = upstream.commit({"README.md": "hello again\n"})
    repo = GitSource(url=git_daemon.url(upstream))

    assert resolve(repo) == second  # the block's branch
    assert resolve(repo, "main") == second
    assert resolve(repo, "feature") == first
    assert resolve(repo, "v1") == first
    assert resolve(repo, "v1-annotated") == first  # peeled to the commit
    assert resolve(repo, first) == first
    assert resolve(repo, first[:7]) == first
    assert resolve(repo, first[:12].upper()) == first


def test_fetch_checks_out_exactly_that_commit(upstream, gitops_home):
    first = upstream.head()
    (upstream.work / "deploy.sh").write_text("#!/bin/sh\n")
    (upstream.work / "deploy.sh").chmod(0o755)
    second = upstream.commit({"app/config.yaml": "replicas: 3\n", "app/extra.yaml": "a: 1\n"})
    repo = GitSource(url=file_url(upstream))

    result = fetch(repo)
    assert (result.url, result.sha, result.ref) == (file_url(upstream), second, "refs/heads/main")
    expected_root = gitops_home / "git" / hashlib.sha256(file_url(upstream).encode()).hexdigest()
    assert result.tree == expected_root / "trees" / second
    files = sorted(str(p.relative_to(result.tree)) for p in result.tree.rglob("*") if p.is_file())
    assert files == ["README.md", "app/config.yaml", "app/extra.yaml", "deploy.sh"]
    assert (result.tree / "app/config.yaml").read_text() == "replicas: 3\n"
    # read-only files with fixed modes, the executable bit kept
    assert stat.S_IMODE((result.tree / "README.md").stat().st_mode) == 0o444
    assert stat.S_IMODE((result.tree / "deploy.sh").stat().st_mode) == 0o555

    old = checkout(repo, first)
    assert old == expected_root / "trees" / first
    assert (old / "app/config.yaml").read_text() == "replicas: 1\n"
    assert not (old / "app/extra.yaml").exists()

    # reused, not rebuilt
    inode = result.tree.stat().st_ino
    assert fetch(repo).tree.stat().st_ino == inode
    assert checkout(repo, second).stat().st_ino == inode


def test_checkout_fetches_a_commit_the_cache_lacks(upstream, gitops_home):
    tree = checkout(GitSource(url=file_url(upstream)), upstream.head())
    assert (tree / "README.md").read_text() == "hello\n"
    with pytest.raises(GitError, match="full commit SHA"):
        checkout(GitSource(url=file_url(upstream)), upstream.head()[:7])


def test_plain_local_path_is_a_remote(upstream, gitops_home, monkeypatch):
    monkeypatch.chdir(upstream.bare.parent)
    result = fetch(GitSource(url=upstream.bare.name))
    assert result.sha == upstream.head()
    assert result.url == upstream.bare.name
    assert (result.tree / "README.md").read_text() == "hello\n"


def test_later_fetch_is_incremental(upstream, git_daemon, gitops_home):
    repo = GitSource(url=git_daemon.url(upstream))
    assert resolve(repo) == upstream.head()
    (cache,) = (gitops_home / "git").iterdir()
    before = loose_objects(cache / "repo.git")

    new = upstream.commit({"new.txt": "new\n"})
    assert resolve(repo) == new
    assert list((gitops_home / "git").iterdir()) == [cache]
    # only the new commit, its root tree and the new blob came over
    assert loose_objects(cache / "repo.git") - before == 3


def test_deleted_branch_is_pruned(upstream, gitops_home):
    upstream.git("branch", "gone")
    upstream.push()
    repo = GitSource(url=file_url(upstream))
    assert resolve(repo, "gone") == upstream.head()
    upstream.git("push", "--quiet", "origin", "--delete", "gone")
    with pytest.raises(GitError, match="'gone' not found"):
        resolve(repo, "gone")


def test_unknown_revision_names_revision_and_url(upstream, http_remote, gitops_home):
    repo = GitSource(url=http_remote.url(upstream), token=SecretStr(HTTP_TOKEN))
    with pytest.raises(GitError) as err:
        resolve(repo, "no-such-branch")
    assert err.value.failure is Failure.NOT_FOUND
    assert "'no-such-branch' not found" in str(err.value)
    assert http_remote.url(upstream) in str(err.value)
    with pytest.raises(GitError, match="not found"):
        resolve(repo, "0" * 40)
    with pytest.raises(GitError, match="not a valid revision") as err:
        resolve(repo, "--upload-pack=touch /tmp/x")
    assert err.value.failure is Failure.INVALID


def test_urls_are_shown_without_credentials():
    assert public_url("https://user:pw@example.com/r.git") == "https://example.com/r.git"
    assert public_url("https://tok@example.com:8443/r.git") == "https://example.com:8443/r.git"
    assert public_url("ssh://git:pw@example.com/r.git") == "ssh://git@example.com/r.git"
    assert public_url("git@example.com:org/r.git") == "git@example.com:org/r.git"
    assert remote_location("git@example.com:org/r.git") == "git@example.com:org/r.git"
    assert remote_location("relative/r.git") == str(Path.cwd() / "relative/r.git")


def test_credentials_in_url_are_refused(gitops_home):
    with pytest.raises(GitError) as err:
        resolve(GitSource(url="https://git:canary-token-7f3a@127.0.0.1:1/r.git"))
    assert err.value.failure is Failure.INVALID
    assert "canary-token-7f3a" not in str(err.value)
    assert "https://127.0.0.1:1/r.git" in str(err.value)
    with pytest.raises(GitError, match="not supported"):
        resolve(GitSource(url="ext::sh -c touch% /tmp/pwned"))


def test_symlink_out_of_the_repository_is_refused(upstream, gitops_home):
    (upstream.work / "leak.yaml").symlink_to("/etc/passwd")
    (upstream.work / "inside.yaml").symlink_to("README.md")
    upstream.commit({})
    with pytest.raises(GitError, match="symlink leaving the repository: leak.yaml -> /etc/passwd"):
        fetch(GitSource(url=file_url(upstream)))
    assert not list((gitops_home / "git").glob("*/trees/*"))  # nothing half-made left


# --- unreachable remotes and timeouts -----------------------------------------


def test_a_remote_with_no_repository_is_missing_not_unreachable_and_not_retried(tmp_path, gitops_home):
    url = f"file://{tmp_path / 'gone.git'}"
    with pytest.raises(GitError) as err:
        fetch(GitSource(url=url))
    assert err.value.failure is Failure.MISSING and not err.value.retryable
    assert str(err.value).startswith(f"{url}: git fetch: no repository there")


@pytest.mark.parametrize("scheme", ["git", "http", "ssh"])
def test_an_unreachable_remote_is_told_apart_and_left_to_prefects_retries(scheme, gitops_home):
    url = f"{scheme}://127.0.0.1:{free_port()}/repo.git"  # nothing listens there
    with pytest.raises(GitError) as err:
        fetch(GitSource(url=url))
    assert err.value.failure is Failure.UNREACHABLE and err.value.retryable  # Prefect retries it, git does not
    assert str(err.value).startswith(f"{url}: git fetch: cannot reach the repository")


def test_timeout_is_a_clear_error_and_kills_git(gitops_home):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"git://127.0.0.1:{silent.getsockname()[1]}/repo.git"
        with pytest.raises(GitError) as err:
            fetch(GitSource(url=url, timeout_seconds=1))
    assert err.value.failure is Failure.TIMEOUT and err.value.retryable
    assert str(err.value) == f"{url}: git fetch after 1 s: timed out"
    # the process group died with it: no git left working on this cache
    assert not [argv for argv in _all_argvs() if str(gitops_home).encode() in argv]


def _all_argvs() -> list[bytes]:
    argvs = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argvs.append(cmdline.read_bytes())
        except OSError:
            continue
    return argvs


# --- HTTPS token ----------------------------------------------------------------


def test_token_authenticates_over_http(upstream, http_remote, gitops_home):
    repo = GitSource(url=http_remote.url(upstream), token=SecretStr(HTTP_TOKEN))
    result = fetch(repo)
    assert result.sha == upstream.head()
    assert (result.tree / "README.md").read_text() == "hello\n"


@pytest.mark.parametrize("token", ["canary-wrong-9b1c", None])
def test_wrong_or_missing_token_fails_clearly(token, upstream, http_remote, gitops_home):
    url = http_remote.url(upstream)
    repo = GitSource(url=url, token=SecretStr(token) if token else None)
    with pytest.raises(GitError) as err:
        fetch(repo)
    assert err.value.failure is Failure.AUTHENTICATION and not err.value.retryable
    assert str(err.value).startswith(f"{url}: git fetch: authentication failed")
    assert "canary" not in str(err.value)


class ProcessWatcher(threading.Thread):
    """Samples argv and environment of every process while git runs."""

    def __init__(self, needle: bytes):
        super().__init__(daemon=True)
        self.needle = needle
        self.done = threading.Event()
        self.git_argvs: set[bytes] = set()
        self.leaks: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    argv = (proc / "cmdline").read_bytes()
                    environ = (proc / "environ").read_bytes()
                except OSError:
                    continue
                if b"git" in argv.split(b"\0")[0]:
                    self.git_argvs.add(argv)
                if self.needle in argv or self.needle in environ:
                    self.leaks.append(argv.decode(errors="replace"))
            time.sleep(0.002)

    def __enter__(self) -> "ProcessWatcher":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join(timeout=5)


def test_token_never_leaks(upstream, http_remote, gitops_home, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(http_remote.server, "delay", 0.15)  # keep git busy while watched
    temp_before = set(Path(tempfile.gettempdir()).glob("gitops-git-*"))
    good = GitSource(url=http_remote.url(upstream), token=SecretStr(HTTP_TOKEN))
    wrong = GitSource(url=http_remote.url(upstream), token=SecretStr(HTTP_TOKEN + "-wrong"))

    with ProcessWatcher(HTTP_TOKEN.encode()) as watcher:
        fetch(good)
        with pytest.raises(GitError) as err:
            fetch(wrong)

    assert any(b"fetch" in argv for argv in watcher.git_argvs), "the watcher never saw git fetch"
    assert watcher.leaks == []
    assert HTTP_TOKEN not in str(err.value) and HTTP_TOKEN not in repr(err.value)
    assert all(HTTP_TOKEN not in r.getMessage() for r in caplog.records)
    assert HTTP_TOKEN not in caplog.text
    for path in gitops_home.rglob("*"):  # nor written into the cache
        if path.is_file():
            assert HTTP_TOKEN.encode() not in path.read_bytes(), path
    assert set(Path(tempfile.gettempdir()).glob("gitops-git-*")) == temp_before  # cleaned up


# --- SSH key --------------------------------------------------------------------


def test_ssh_key_authenticates(upstream, ssh_remote, gitops_home):
    repo = GitSource(url=ssh_remote.url(upstream), ssh_private_key=SecretStr(ssh_remote.client_key),
                         ssh_known_hosts=ssh_remote.known_hosts)
    result = fetch(repo)
    assert result.sha == upstream.head()
    assert (result.tree / "app/config.yaml").read_text() == "replicas: 1\n"


def test_wrong_ssh_key_or_host_key_fails_clearly(upstream, ssh_remote, gitops_home, tmp_path):
    other_key, other_pub = ssh_keygen(tmp_path / "other")
    url = ssh_remote.url(upstream)

    with pytest.raises(GitError) as err:
        fetch(GitSource(url=url, ssh_private_key=SecretStr(other_key),
                            ssh_known_hosts=ssh_remote.known_hosts))
    assert err.value.failure is Failure.AUTHENTICATION
    assert str(err.value).startswith(f"{url}: git fetch: authentication failed")
    assert "PRIVATE KEY" not in str(err.value)

    impostor = f"[127.0.0.1]:{ssh_remote.port} {other_pub}"
    with pytest.raises(GitError) as err:
        fetch(GitSource(url=url, ssh_private_key=SecretStr(ssh_remote.client_key),
                            ssh_known_hosts=impostor))
    assert err.value.failure is Failure.HOST_KEY
    assert "host key is not trusted" in str(err.value)


# --- signed commits ---------------------------------------------------------------


def test_ssh_signed_commits_are_verified(upstream, gitops_home, ssh_signer_factory):
    alice, mallory = ssh_signer_factory("alice@example.com"), ssh_signer_factory("mallory@example.com")
    repo = GitSource(url=file_url(upstream), require_signed_commits=True,
                         trusted_ssh_signers=[alice.allowed_signers_line])

    unsigned = upstream.head()
    with pytest.raises(GitError) as err:
        fetch(repo)
    assert err.value.failure is Failure.UNVERIFIED
    assert f"commit {unsigned[:7]} is not signed" in str(err.value)

    good = upstream.commit({"a.txt": "1\n"}, sign=alice.sign)
    assert fetch(repo).sha == good

    bad = upstream.commit({"a.txt": "2\n"}, sign=mallory.sign)
    with pytest.raises(GitError, match=f"commit {bad[:7]} is signed by an untrusted key"):
        fetch(repo)
    with pytest.raises(GitError, match=f"commit {unsigned[:7]} is not signed"):
        checkout(repo, unsigned)
    # the same commits are fine when the block does not ask for signatures
    assert fetch(GitSource(url=file_url(upstream))).sha == bad


def test_gpg_signed_commits_are_verified(upstream, gitops_home, gpg_signer_factory):
    alice, mallory = gpg_signer_factory("alice@example.com"), gpg_signer_factory("mallory@example.com")
    repo = GitSource(url=file_url(upstream), require_signed_commits=True,
                         trusted_gpg_keys=[alice.public_key])

    good = upstream.commit({"a.txt": "1\n"}, sign=alice.sign, env=alice.env)
    assert resolve(repo) == good

    bad = upstream.commit({"a.txt": "2\n"}, sign=mallory.sign, env=mallory.env)
    with pytest.raises(GitError, match=f"commit {bad[:7]} is signed by an untrusted key"):
        resolve(repo)
    ssh_only = GitSource(url=file_url(upstream), require_signed_commits=True,
                             trusted_ssh_signers=["alice@example.com ssh-ed25519 AAAA"])
    with pytest.raises(GitError, match="untrusted key .no trusted GPG keys configured"):
        resolve(ssh_only, good)


# --- the block --------------------------------------------------------------------


def test_block_keeps_secrets_secret():
    block = GitRepository(url="https://example.com/r.git", token="canary-token-7f3a",
                          ssh_private_key="canary-key-5d2e")
    assert isinstance(block.token, SecretStr) and isinstance(block.ssh_private_key, SecretStr)
    assert block.token.get_secret_value() == "canary-token-7f3a"
    for text in (repr(block), str(block), block.model_dump_json()):
        assert "canary" not in text
    assert GitRepository._block_type_slug == "gitops-git-repository"
    assert GitRepository(url="x").branch == "main" and GitRepository(url="x").username == "git"
    source = block.source()  # what the engine takes: the same secrets, still SecretStr
    assert source.token.get_secret_value() == "canary-token-7f3a" and "canary" not in repr(source)


# --- GitPython under the session ------------------------------------------------


def test_gitpython_runs_git_under_the_session_not_the_callers_environment(upstream, gitops_home,
                                                                            tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = from-user-config\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'user.email'='from-env'")
    monkeypatch.setenv("GIT_DIR", str(upstream.bare))  # would point git at another repository
    repo = GitSource(url=file_url(upstream))
    resolve(repo)
    with _session(repo) as s, s.open(s.git_dir) as cached:
        assert cached.git.rev_parse("--absolute-git-dir") == str(s.git_dir)
        status, name, _ = cached.git.config("--get", "user.name", with_extended_output=True,
                                            with_exceptions=False)
        assert (status, name) == (1, "")  # neither the user's config nor GIT_CONFIG_PARAMETERS
        assert cached.git.config("--get", "user.email", with_exceptions=False) == ""
        assert cached.commit("main").hexsha == upstream.head()  # the object reader too
        with pytest.raises(CommandFailed) as err:
            cached.git.rev_parse("--verify", "no-such-ref")
        assert err.value.status == 128 and "Needed a single revision" in err.value.output


def test_gitpython_network_commands_time_out_and_kill_the_group(upstream, gitops_home):
    repo = GitSource(url=file_url(upstream), timeout_seconds=1)
    resolve(repo)
    with socket.socket() as silent, _session(repo) as s, s.open(s.git_dir) as cached:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"git://127.0.0.1:{silent.getsockname()[1]}/repo.git"
        with pytest.raises(GitError) as err:
            cached.git.fetch(url, "main")
    assert err.value.failure is Failure.TIMEOUT
    assert str(err.value).endswith("git fetch after 1 s: timed out")
    assert not [argv for argv in _all_argvs() if url.encode() in argv]


def test_a_redirecting_environment_is_refused(upstream, gitops_home, monkeypatch):
    repo = GitSource(url=file_url(upstream))
    resolve(repo)
    monkeypatch.setenv("GIT_WORK_TREE", str(upstream.work))
    with _session(repo) as s, pytest.raises(GitError, match="GIT_WORK_TREE is set"):
        s.open(s.git_dir)
