"""Real Git remotes on loopback for the tests of tasks/git.py: a bare repository
served by `git daemon`, by `git http-backend` behind HTTP basic auth, and by
`sshd` with key-only authentication; plus upstream repositories to push to and
SSH / GPG signers. Import the fixtures into a test module; every process a
fixture starts is stopped at its teardown.

The Debian packages they need are installed by scripts/install-test-deps.sh."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from urllib.parse import unquote

import pytest

START_TIMEOUT_S = 10
CMD_TIMEOUT_S = 30
HTTP_USER = "git"
HTTP_TOKEN = "canary-token-7f3a"
HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
SSHD = "/usr/sbin/sshd"

# Upstream commits are made with no user or system config, and a fixed identity.
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
}


def run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        input: str | None = None) -> str:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env or GIT_ENV, input=input,
                            capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed:\n{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, banner: bytes = b"") -> None:
    """Until the port accepts connections (and greets with `banner`), bounded."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if not banner or s.recv(64).startswith(banner):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port} within {START_TIMEOUT_S} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --- upstream repositories --------------------------------------------------


@dataclass
class Upstream:
    """A bare repository under the served base folder, and a working clone
    that commits and pushes to it."""

    bare: Path
    work: Path

    @property
    def name(self) -> str:
        return self.bare.name

    def git(self, *args: str | Path, env: dict[str, str] | None = None) -> str:
        return run("git", *args, cwd=self.work, env=env)

    def commit(self, files: dict[str, str], message: str = "change", sign: list[str] = (),
               env: dict[str, str] | None = None) -> str:
        """Write files, commit (with `sign`: git options that sign), push; the new SHA."""
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "--all")
        self.git(*sign, "commit", "--quiet", "--allow-empty", "-m", message, *(["-S"] if sign else []), env=env)
        self.push()
        return self.head()

    def tag(self, name: str, message: str | None = None) -> None:
        self.git("tag", *(["-a", "-m", message] if message else []), name)
        self.push()

    def push(self) -> None:
        self.git("push", "--quiet", "--force", "--all", "origin")
        self.git("push", "--quiet", "--force", "--tags", "origin")

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()


_upstreams = count()


@pytest.fixture(scope="session")
def git_base(tmp_path_factory) -> Path:
    """The folder every server exports."""
    return tmp_path_factory.mktemp("remotes")


@pytest.fixture
def upstream(git_base: Path, tmp_path: Path) -> Upstream:
    """A new repository with one commit on main: README.md and app/config.yaml."""
    bare = git_base / f"repo{next(_upstreams)}.git"
    run("git", "init", "--quiet", "--bare", "-b", "main", bare)
    work = tmp_path / "work"
    run("git", "init", "--quiet", "-b", "main", work)
    repo = Upstream(bare, work)
    repo.git("remote", "add", "origin", bare)
    repo.commit({"README.md": "hello\n", "app/config.yaml": "replicas: 1\n"}, "initial")
    return repo


@pytest.fixture
def gitops_home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh $GITOPS_HOME, so every test starts with an empty cache."""
    home = tmp_path / "gitops-home"
    monkeypatch.setenv("GITOPS_HOME", str(home))
    return home


# --- git daemon ---------------------------------------------------------------


@dataclass
class Daemon:
    port: int

    def url(self, repo: Upstream) -> str:
        return f"git://127.0.0.1:{self.port}/{repo.name}"


@pytest.fixture(scope="session")
def git_daemon(git_base: Path) -> Daemon:
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
         f"--base-path={git_base}", "--listen=127.0.0.1", f"--port={port}", str(git_base)],
        env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield Daemon(port)
    finally:
        stop(proc)


# --- git http-backend behind basic auth ---------------------------------------


class _GitHTTPHandler(BaseHTTPRequestHandler):
    """Runs git http-backend as CGI for requests that carry the right token."""

    server: "_GitHTTPServer"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args) -> None:
        self.server.requests.append(format % args)

    def _serve(self) -> None:
        time.sleep(self.server.delay)
        if self.headers.get("Authorization") != self.server.expected_auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "REQUEST_METHOD": self.command, "PATH_INFO": unquote(path), "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "REMOTE_USER": HTTP_USER,
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        body = self._body()
        env["CONTENT_LENGTH"] = str(len(body))
        out = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True,
                             timeout=CMD_TIMEOUT_S).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class _GitHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, token: str):
        super().__init__(("127.0.0.1", 0), _GitHTTPHandler)
        self.root = root
        self.expected_auth = "Basic " + base64.b64encode(f"{HTTP_USER}:{token}".encode()).decode()
        self.delay = 0.0  # seconds before each response, to watch git while it waits
        self.requests: list[str] = []


@dataclass
class HTTPRemote:
    server: _GitHTTPServer
    user: str = HTTP_USER
    token: str = HTTP_TOKEN

    def url(self, repo: Upstream) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{repo.name}"


@pytest.fixture(scope="session")
def http_remote(git_base: Path) -> HTTPRemote:
    if not os.path.exists(HTTP_BACKEND):
        pytest.skip(f"{HTTP_BACKEND} not found (Debian package git)")
    server = _GitHTTPServer(git_base, HTTP_TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield HTTPRemote(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- sshd with key-only authentication ----------------------------------------


@dataclass
class SSHRemote:
    port: int
    user: str
    client_key: str  # the private key that may log in
    known_hosts: str  # the server's host key, as a known_hosts line

    def url(self, repo: Upstream) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo.bare}"


def ssh_keygen(path: Path, comment: str = "") -> tuple[str, str]:
    """A new ed25519 key pair without passphrase: (private key, public key line)."""
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path)
    return path.read_text(), Path(f"{path}.pub").read_text().strip()


@pytest.fixture(scope="session")
def ssh_remote(tmp_path_factory) -> SSHRemote:
    if not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("sshd/ssh not installed (run scripts/install-test-deps.sh)")
    folder = tmp_path_factory.mktemp("sshd")
    _, host_pub = ssh_keygen(folder / "host_key")
    client_key, client_pub = ssh_keygen(folder / "client_key", "gitops-test")
    (folder / "authorized_keys").write_text(client_pub + "\n")
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {folder / 'host_key'}
PidFile {folder / 'sshd.pid'}
AuthorizedKeysFile {folder / 'authorized_keys'}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
UsePAM no
StrictModes no
LogLevel VERBOSE
""")
    log = open(folder / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    try:
        wait_for_port(port, proc, banner=b"SSH-2.0")
        yield SSHRemote(port, user, client_key, f"[127.0.0.1]:{port} {host_pub}")
    finally:
        stop(proc)
        log.close()


# --- signers ------------------------------------------------------------------


@dataclass
class SSHSigner:
    key_file: Path
    allowed_signers_line: str

    @property
    def sign(self) -> list[str]:
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.key_file}"]


@pytest.fixture
def ssh_signer_factory(tmp_path: Path):
    def make(email: str) -> SSHSigner:
        key = tmp_path / f"sign-{email}"
        _, pub = ssh_keygen(key, email)
        return SSHSigner(key, f"{email} {pub}")
    return make


@dataclass
class GPGSigner:
    home: Path
    fingerprint: str
    public_key: str  # ASCII armored

    @property
    def env(self) -> dict[str, str]:
        return GIT_ENV | {"GNUPGHOME": str(self.home)}

    @property
    def sign(self) -> list[str]:
        return ["-c", "gpg.format=openpgp", "-c", "gpg.program=gpg", "-c", f"user.signingkey={self.fingerprint}"]


@pytest.fixture
def gpg_signer_factory():
    """Makes GPG keys in one throwaway GnuPG home; its agent is stopped at teardown."""
    if not (shutil.which("gpg") and shutil.which("gpgconf")):
        pytest.skip("gpg not installed (Debian package gnupg)")
    home = Path(tempfile.mkdtemp(prefix="gpg-"))  # short: gpg-agent's socket lives in it
    env = GIT_ENV | {"GNUPGHOME": str(home)}

    def make(email: str) -> GPGSigner:
        run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"<{email}>",
            "ed25519", "sign", "never", env=env)
        colons = run("gpg", "--batch", "--with-colons", "--list-keys", email, env=env)
        fingerprint = next(ln.split(":")[9] for ln in colons.splitlines() if ln.startswith("fpr:"))
        public = run("gpg", "--batch", "--armor", "--export", fingerprint, env=env)
        return GPGSigner(home, fingerprint, public)

    try:
        yield make
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, timeout=CMD_TIMEOUT_S)
        shutil.rmtree(home, ignore_errors=True)
