"""What a client needs to reach and authenticate to one cluster, read from a
kubeconfig the way kubectl (client-go) reads it: the server, one TLS context
(built once, so a connection pool does not load the CA again per connection),
the TLS server name, the proxy, and the credentials that give the request
headers (a bearer token, a token file, basic auth, an exec plugin, or a
deprecated auth-provider, which alone falls back to the kubernetes package).

Only the standard library and yaml are imported here: importing the kubernetes
package costs every command 0.3 s, so it is imported inside AuthProvider only.
No error message holds a token, a key or a password."""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import datetime
import json
import os
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import SecretStr

EXEC_TIMEOUT_S = 60
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


class KubeconfigError(ValueError):
    """A kubeconfig that cannot give access: one line naming the context,
    cluster or user and what is wrong; never a secret value."""


# ---- credentials --------------------------------------------------------------------

class Credentials:
    """How requests prove who they are. headers() may refresh (token file, exec
    plugin); an exec plugin's client certificate goes into the TLS context it is given."""

    def headers(self, ssl_context: ssl.SSLContext | None) -> dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoCredentials(Credentials):
    """Anonymous, or a client certificate alone (which lives in the TLS context)."""


class BearerToken(Credentials):
    def __init__(self, token: str):
        self._token = token

    def headers(self, ssl_context: ssl.SSLContext | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}


class BasicAuth(Credentials):
    def __init__(self, username: str, password: str):
        self.username, self._password = username, password

    def headers(self, ssl_context: ssl.SSLContext | None) -> dict[str, str]:
        pair = base64.b64encode(f"{self.username}:{self._password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r})"


class TokenFile(Credentials):
    """A token read from a file, and read again when the file changes (projected
    service-account tokens are rotated in place; kubectl re-reads them too)."""

    def __init__(self, path: Path, where: str):
        self.path, self._where = path, where
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._token = ""
        self._read()

    def _read(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime:
                self._token, self._mtime = self.path.read_text().strip(), mtime
        except OSError as exc:
            raise KubeconfigError(f"{self._where}: tokenFile {self.path} cannot be read ({exc.strerror})") from None

    def headers(self, ssl_context: ssl.SSLContext | None) -> dict[str, str]:
        with self._lock:
            self._read()
            return {"Authorization": f"Bearer {self._token}"}

    def __repr__(self) -> str:
        return f"TokenFile(path={str(self.path)!r})"


class ExecPlugin(Credentials):
    """A client-go credential plugin (client.authentication.k8s.io/v1 or v1beta1),
    run on first use and again once its credential's expirationTimestamp passed.
    One lock: many threads ask for headers, one runs the plugin."""

    def __init__(self, spec: dict, where: str, base_dir: Path | None, cluster_info: dict | None):
        self._where = where
        self.api_version = spec.get("apiVersion")
        if self.api_version not in EXEC_API_VERSIONS:
            raise KubeconfigError(f"{where}: exec apiVersion {self.api_version!r} is not one of {', '.join(EXEC_API_VERSIONS)}")
        if spec.get("interactiveMode") == "Always":
            raise KubeconfigError(f"{where}: exec interactiveMode Always needs a terminal, and requests have none")
        self.command = _plugin_command(spec.get("command"), where, base_dir)
        self.args = [str(a) for a in spec.get("args") or []]
        self._env = {str(e["name"]): str(e.get("value", "")) for e in spec.get("env") or []
                     if isinstance(e, dict) and e.get("name")}
        self._cluster_info = cluster_info if spec.get("provideClusterInfo") else None
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires: datetime.datetime | None = None
        self._ran = False

    def headers(self, ssl_context: ssl.SSLContext | None) -> dict[str, str]:
        with self._lock:
            if not self._ran or (self._expires and _now() >= self._expires):
                self._refresh(ssl_context)
            return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _refresh(self, ssl_context: ssl.SSLContext | None) -> None:
        status = self._run()
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if not status.get("token") and not (cert and key):
            raise KubeconfigError(f"{self._where}: exec plugin {self.command} gave neither a token nor a client certificate and key")
        if cert and key and ssl_context is not None:
            # Loaded into the shared context: new connections present the new pair.
            _load_client_pair(ssl_context, cert.encode(), key.encode(), f"{self._where}: exec plugin {self.command}")
        self._token = status.get("token") or None
        self._expires = _parse_time(status.get("expirationTimestamp"), f"{self._where}: exec plugin {self.command}")
        self._ran = True

    def _run(self) -> dict:
        info: dict[str, Any] = {"interactive": False}
        if self._cluster_info is not None:
            info["cluster"] = self._cluster_info
        exec_info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": info}
        env = {**os.environ, **self._env, "KUBERNETES_EXEC_INFO": json.dumps(exec_info)}
        named = f"{self._where}: exec plugin {self.command}"
        try:
            done = subprocess.run([self.command, *self.args], env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=EXEC_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise KubeconfigError(f"{named} did not finish within {EXEC_TIMEOUT_S} s") from None
        except OSError as exc:
            raise KubeconfigError(f"{named} cannot be run ({exc.strerror})") from None
        # Only stderr is quoted: stdout may hold a token.
        last = _last_line(done.stderr)
        if done.returncode != 0:
            raise KubeconfigError(f"{named} failed with exit code {done.returncode}" + (f": {last}" if last else ""))
        try:
            output = json.loads(done.stdout)
            status = output["status"] if output.get("kind") == "ExecCredential" else None
        except (ValueError, KeyError, TypeError, AttributeError):
            status = None
        if not isinstance(status, dict):
            raise KubeconfigError(f"{named} (exit code 0) did not print an ExecCredential with a status"
                                  + (f"; its stderr: {last}" if last else ""))
        return status

    def __repr__(self) -> str:
        return f"ExecPlugin(command={self.command!r})"


class AuthProvider(Credentials):
    """A deprecated auth-provider (oidc, gcp): the kubernetes package knows how to
    refresh them, so it does, imported here only (it costs a command 0.3 s)."""

    def __init__(self, provider: dict, where: str):
        self.name = str(provider.get("name", ""))
        self._provider, self._where = provider, where
        self._lock = threading.Lock()
        self._configuration: Any = None

    def headers(self, ssl_context: ssl.SSLContext | None) -> dict[str, str]:
        with self._lock:
            try:
                if self._configuration is None:
                    self._configuration = self._load()
                # get_api_key_with_prefix runs refresh_api_key_hook (a refresh when expired).
                # kubernetes 36 keeps the token under "BearerToken"; older ones under "authorization".
                value = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
            except KubeconfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - its messages may quote the config: name the type only
                raise KubeconfigError(f"{self._where}: auth-provider {self.name!r} failed ({type(exc).__name__})") from None
        if not value:
            raise KubeconfigError(f"{self._where}: auth-provider {self.name!r} gave no token")
        return {"Authorization": value}

    def _load(self) -> Any:
        from kubernetes.client import Configuration
        from kubernetes.config.kube_config import KubeConfigLoader

        # Only the user's provider goes to the loader, with an http server, so that
        # it writes no CA or client key of ours into temporary files.
        config = {
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": {"server": "http://auth-provider.invalid"}}],
            "users": [{"name": "u", "user": {"auth-provider": copy.deepcopy(self._provider)}}],
        }
        configuration = Configuration()
        KubeConfigLoader(config_dict=config).load_and_set(configuration)
        return configuration

    def __repr__(self) -> str:
        return f"AuthProvider(name={self.name!r})"


# ---- access ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterAccess:
    server: str
    ssl_context: ssl.SSLContext | None = field(repr=False)
    tls_server_name: str | None
    proxy_url: str | None
    credentials: Credentials

    def auth_headers(self) -> dict[str, str]:
        return self.credentials.headers(self.ssl_context)


@dataclass(frozen=True)
class Cluster:
    """A cluster as the engine takes it (the cluster block turns itself into one):
    the name apps target it by, its labels, whether every app must impersonate a
    ServiceAccount there, and its whole kubeconfig (secret) with the context to use."""

    name: str
    kubeconfig: SecretStr = field(repr=False)
    context: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    require_impersonation: bool = False

    def access(self) -> ClusterAccess:
        """How to reach it: the kubeconfig stays in memory (a client key goes into the TLS context)."""
        return load_access(yaml.safe_load(self.kubeconfig.get_secret_value()), self.context)


def load_access_file(path: str | os.PathLike, context: str | None = None) -> ClusterAccess:
    """Access from a kubeconfig file; its relative paths resolve against its directory."""
    path = Path(path)
    return load_access(read_kubeconfig(path), context, base_dir=path.resolve().parent)


def read_kubeconfig(path: Path) -> Any:
    """A kubeconfig file's YAML, or a KubeconfigError naming the file."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig {path} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise KubeconfigError(f"kubeconfig {path} is not YAML") from None


def load_access(config: dict, context: str | None = None, *, base_dir: str | os.PathLike | None = None) -> ClusterAccess:
    """Access to the cluster of `context` (None: the current-context). Relative
    file paths resolve against base_dir (None: the working directory)."""
    if not isinstance(config, dict):
        raise KubeconfigError("kubeconfig is not a mapping")
    base = Path(base_dir) if base_dir is not None else None
    context = context or config.get("current-context")
    if not context:
        raise KubeconfigError("kubeconfig has no current-context and no context was given")
    ctx = _named(config, "contexts", "context", context, "kubeconfig")
    cluster_name = ctx.get("cluster")
    if not cluster_name:
        raise KubeconfigError(f"context {context!r} names no cluster")
    cluster = _named(config, "clusters", "cluster", cluster_name, f"context {context!r}")
    user_name = ctx.get("user")
    user = _named(config, "users", "user", user_name, f"context {context!r}") if user_name else {}
    where_cluster, where_user = f"cluster {cluster_name!r}", f"user {user_name!r}"

    server = _server(cluster, where_cluster)
    ca = _file_or_data(cluster, "certificate-authority", where_cluster, base)
    ssl_context = _ssl_context(cluster, ca, where_cluster) if server.startswith("https://") else None
    if ssl_context is not None:
        cert = _file_or_data(user, "client-certificate", where_user, base)
        key = _file_or_data(user, "client-key", where_user, base)
        if bool(cert) != bool(key):
            raise KubeconfigError(f"{where_user}: a client certificate needs both a certificate and a key")
        if cert and key:
            _load_client_pair(ssl_context, cert, key, where_user)
    cluster_info = _exec_cluster_info(cluster, server, ca)
    return ClusterAccess(
        server=server,
        ssl_context=ssl_context,
        tls_server_name=cluster.get("tls-server-name") or None,
        proxy_url=cluster.get("proxy-url") or None,
        credentials=_credentials(user, where_user, base, cluster_info),
    )


def _named(config: dict, section: str, key: str, name: str, where: str) -> dict:
    entries = config.get(section) or []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get(key) or {}
    known = ", ".join(repr(e.get("name")) for e in entries if isinstance(e, dict)) or "none"
    raise KubeconfigError(f"{where}: {key} {name!r} is not in the kubeconfig (its {section}: {known})")


def _server(cluster: dict, where: str) -> str:
    server = str(cluster.get("server") or "").strip().rstrip("/")
    if not server:
        raise KubeconfigError(f"{where} has no server")
    if "://" not in server:
        server = "https://" + server  # as client-go does
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(f"{where}: server {server!r} is neither https:// nor http://")
    return server


def _ssl_context(cluster: dict, ca: bytes | None, where: str) -> ssl.SSLContext:
    if cluster.get("insecure-skip-tls-verify"):
        if ca:
            # kubectl refuses this pair too: which of the two was meant is unclear.
            raise KubeconfigError(f"{where}: a certificate authority and insecure-skip-tls-verify cannot be used together")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if not ca:
        return ssl.create_default_context()  # the system's CAs
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=ca.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise KubeconfigError(f"{where}: the certificate authority is not a PEM certificate") from None
    return context


def _file_or_data(section: dict, name: str, where: str, base: Path | None) -> bytes | None:
    """`name-data` (base64) or the file `name`, as bytes; None when neither is set."""
    data = section.get(f"{name}-data")
    if data:
        try:
            # Go's decoder skips line breaks; ours must too.
            return base64.b64decode("".join(str(data).split()), validate=True)
        except (binascii.Error, ValueError):
            raise KubeconfigError(f"{where}: {name}-data is not valid base64") from None
    path = section.get(name)
    if not path:
        return None
    return _read_file(_resolve(path, base), f"{where}: {name}")


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KubeconfigError(f"{what} file {path} does not exist") from None
    except OSError as exc:
        raise KubeconfigError(f"{what} file {path} cannot be read ({exc.strerror})") from None


def _resolve(path: str | os.PathLike, base: Path | None) -> Path:
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() or base is None else base / path


def _load_client_pair(context: ssl.SSLContext, cert: bytes, key: bytes, where: str) -> None:
    try:
        with _memory_file(cert.rstrip(b"\n") + b"\n" + key) as path:
            context.load_cert_chain(path)
    except ssl.SSLError:
        raise KubeconfigError(f"{where}: the client certificate and key are not a matching PEM pair") from None


@contextlib.contextmanager
def _memory_file(content: bytes) -> Iterator[str]:
    """A path to `content` for load_cert_chain (which reads only paths): an
    anonymous in-memory file, so a private key never touches the disk; where
    there is none, a 0600 temporary file removed right after."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("kubeconfig-client-pair", os.MFD_CLOEXEC)
        try:
            _write_all(fd, content)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, name = tempfile.mkstemp(prefix="kubeconfig-")  # mkstemp makes it 0600
    try:
        _write_all(fd, content)
        os.close(fd)
        fd = -1
        yield name
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(name)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]


def _credentials(user: dict, where: str, base: Path | None, cluster_info: dict) -> Credentials:
    # The order and the refusals are client-go's: a token (the file wins) over
    # an exec plugin; a token and basic auth together, or exec and an
    # auth-provider together, are ambiguous.
    has_token = bool(user.get("token") or user.get("tokenFile"))
    if has_token and user.get("username"):
        raise KubeconfigError(f"{where}: has both a token and a username/password; only one is allowed")
    if user.get("exec") and user.get("auth-provider"):
        raise KubeconfigError(f"{where}: has both exec and auth-provider; only one is allowed")
    if user.get("tokenFile"):
        return TokenFile(_resolve(user["tokenFile"], base), where)
    if user.get("token"):
        return BearerToken(str(user["token"]))
    if user.get("username"):
        return BasicAuth(str(user["username"]), str(user.get("password") or ""))
    if user.get("exec"):
        return ExecPlugin(user["exec"], where, base, cluster_info)
    if user.get("auth-provider"):
        return AuthProvider(user["auth-provider"], where)
    return NoCredentials()


def _exec_cluster_info(cluster: dict, server: str, ca: bytes | None) -> dict:
    """spec.cluster of an ExecCredential (provideClusterInfo: true)."""
    info: dict[str, Any] = {"server": server}
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url", "disable-compression"):
        if cluster.get(key):
            info[key] = cluster[key]
    extension = _exec_extension(cluster)
    if extension is not None:
        info["config"] = extension
    return info


def _exec_extension(cluster: dict) -> Any:
    for entry in cluster.get("extensions") or []:
        if isinstance(entry, dict) and entry.get("name") == "client.authentication.k8s.io/exec":
            return entry.get("extension")
    return None


def _plugin_command(command: Any, where: str, base: Path | None) -> str:
    if not command:
        raise KubeconfigError(f"{where}: exec has no command")
    command = str(command)
    # As client-go: a bare name is looked up on PATH, a relative path is the kubeconfig's.
    if os.sep in command and not os.path.isabs(command) and base is not None:
        return str(base / command)
    return command


def _parse_time(value: Any, where: str) -> datetime.datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise KubeconfigError(f"{where}: expirationTimestamp {value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1].strip()[:300] if lines else ""
