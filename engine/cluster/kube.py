"""Cluster access shared by every stage: one KubeClient per cluster per run, with
discovery cached for the run, bounded concurrency, a time limit on every request,
quick retries on fast transient failures only, and every request counted by verb.
Requests are plain JSON over urllib3, with the TLS context and credentials that
engine/cluster/kubeconfig.py builds: the kubernetes package's clients are not used (just
importing them costs a command 0.3 s; they also load the CA again per connection).

Time limits: every request has a connect limit (5 s: also the TLS handshake of a new
connection) and a read limit (30 s without a byte of the answer; ample for a LIST or
a dry-run of a big set). A request to a server that accepts connections but never
answers (a paused or overloaded kube-apiserver) fails after at most 30 s on a pooled
connection, 5 s on a new one, and is not retried here: a timeout already waited its
limit. Refused and dropped connections fail at once and are retried here (4 tries,
1.4 s of backoff). Either way the error is a ClusterUnreachable naming the server;
the stage's own retries (tasks/retry.py) decide whether to try again later: not
after a timeout. For a second after a timeout, new requests of the client fail at
once with it (_FailFast), so that the many threads of a stage do not each wait a
limit of their own, and until the server answers again requests wait 5 s for an
answer, not 30. So a sync against a server that stops answering fails within
about 50 s: the read limit of the stage that was waiting (or of a Lease renewal
in flight, which is joined), then the failure's record, the Lease's release and
the cluster's next app at 5 s each (tests/test_faults.py works the bound out)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from copy import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import urllib3

from prefect_gitops.engine.cluster.kubeconfig import Cluster, ClusterAccess, load_access_file

FIELD_MANAGER = "prefect-gitops"
DEFAULT_WORKERS = 16
# Connections beyond the workers: the caller's own thread, the Lease's renewal and
# the health wait's first reads run beside a stage's workers.
POOL_RESERVE = 4
# Objects per page of a LIST: a namespace of 10,000 objects is 20 answers of a few
# MB each, not one of 100 MB held whole in memory.
LIST_PAGE_SIZE = 500
VERBS = ("GET", "LIST", "WATCH", "POST", "PATCH", "PUT", "DELETE")
WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


# ---- bounded concurrency --------------------------------------------------------

def run_bounded(fn: Callable[[T], R], items: Iterable[T], max_workers: int = DEFAULT_WORKERS) -> list[R]:
    """fn over items on at most `max_workers` threads, each in a copy of the
    caller's context (its WRITE_GUARD goes along); results in the order of the
    items. The first exception raised by fn is raised here."""
    items = list(items)
    if len(items) <= 1 or max_workers <= 1:
        return [fn(item) for item in items]
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix="gitops-kube") as pool:
        return list(pool.map(lambda item: context.copy().run(fn, item), items))


# ---- write fencing ---------------------------------------------------------------

# Called before every request that writes (not dry-run) in this context; raises to
# refuse it. The app's Lease sets it (engine/state/lock.py): a holder that may have lost
# its Lease writes nothing more.
WRITE_GUARD: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "gitops_write_guard", default=None)


# ---- request counting ------------------------------------------------------------

class RequestCounter:
    """Requests sent, by verb, and which of the writes were dry-runs. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {verb: 0 for verb in VERBS}
        self._dry_runs = {verb: 0 for verb in VERBS}

    def count(self, verb: str, dry_run: bool = False) -> None:
        with self._lock:
            self._counts[verb] += 1
            if dry_run:
                self._dry_runs[verb] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def writes(self) -> dict[str, int]:
        """Requests that change the cluster: POST/PATCH/PUT/DELETE without dryRun."""
        with self._lock:
            return {verb: self._counts[verb] - self._dry_runs[verb] for verb in WRITE_VERBS}

    def reset(self) -> dict[str, int]:
        """Zero every count; return the counts before."""
        with self._lock:
            before = dict(self._counts)
            self._counts = {verb: 0 for verb in VERBS}
            self._dry_runs = {verb: 0 for verb in VERBS}
            return before


def request_verb(method: str, url: str, query_params: Iterable[tuple[str, Any]] | None = None) -> str:
    """The verb of an HTTP request as Kubernetes audits it: a GET of a collection
    is a LIST, with watch=1 a WATCH; anything else is its HTTP method."""
    method = method.upper()
    if method != "GET":
        return method
    if any(key == "watch" for key, _ in query_params or ()):
        return "WATCH"
    return "LIST" if _is_collection(urlsplit(url).path) else "GET"


def _is_collection(path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):  # the API root may sit below a proxy prefix
        if part == "api":
            rest = parts[i + 2:]  # api/v1/...
            break
        if part == "apis":
            rest = parts[i + 3:]  # apis/GROUP/VERSION/...
            break
    else:
        return False  # /version, /openapi/...: documents, not collections
    if len(rest) >= 3 and rest[0] == "namespaces":
        if len(rest) == 3 and rest[2] in ("status", "finalize"):
            return False  # a Namespace's own subresource
        rest = rest[2:]
    return len(rest) == 1


# ---- time limits ------------------------------------------------------------------

@dataclass(frozen=True)
class RequestTimeout:
    """The limits of one request: to connect (TCP and TLS), and then between the
    bytes of the answer."""

    connect_s: float = 5.0
    read_s: float = 30.0

    def for_urllib3(self) -> urllib3.Timeout:
        return urllib3.Timeout(connect=self.connect_s, read=self.read_s)

    def __str__(self) -> str:
        return f"connect {self.connect_s:g} s, read {self.read_s:g} s"


# ---- retries ----------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `attempts` tries in all, waiting first_delay, then
    twice as long each time, never more than max_delay."""

    attempts: int = 4
    first_delay: float = 0.2
    max_delay: float = 1.6

    def delay(self, retry: int) -> float:
        return min(self.first_delay * 2 ** retry, self.max_delay)


NO_RETRY = RetryPolicy(attempts=1)


def is_retryable(error: BaseException) -> bool:
    """Transient failures only: 429, 5xx and dropped connections. Never 4xx: a 404,
    409 or 422 says the same thing every time it is asked."""
    if isinstance(error, ClusterUnreachable):
        return error.transient and not error.unresponsive
    if isinstance(error, ApiError):  # the server's answer
        # Server-side apply answers a schema mismatch with a 500: not transient.
        return error.code == 429 or (error.code >= 500 and error.schema_mismatch() is None)
    if isinstance(error, urllib3.exceptions.MaxRetryError):
        return not isinstance(error.reason, urllib3.exceptions.SSLError) or _closed_mid_tls(error.reason)
    return isinstance(error, (urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError,
                              ConnectionError))


def _is_timeout(error: BaseException) -> bool:
    """The server did not answer within a limit: it may not for a while."""
    if isinstance(error, urllib3.exceptions.MaxRetryError):
        error = error.reason
    return (isinstance(error, (urllib3.exceptions.TimeoutError, socket.timeout))
            and not isinstance(error, urllib3.exceptions.NewConnectionError))  # refused: at once


def _retry_after(error: BaseException) -> float:
    """The wait a 429 or 503 asked for (Retry-After, in seconds)."""
    try:
        return float(getattr(error, "retry_after", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


# How long after a timeout new requests fail at once: long enough for the workers
# of a stage to run out of objects, short enough that a retry a few seconds later
# asks the server again.
FAIL_FAST_S = 1.0
# After a timeout, until the server answers again, requests wait this long for an
# answer: the clean-up after a failure (recording it, releasing the Lease) against
# a server that stopped answering then takes seconds, not a read limit each.
UNRESPONSIVE_READ_S = 5.0


class _FailFast:
    """After a request timed out, those that start within the next `hold_s` fail at
    once with the same error rather than each waiting its own limit: an apply of 200
    objects on 16 threads against a paused server then fails in one read limit, not
    in 200 / 16 connect limits more. Any answer of the server ends it at once;
    until then the server counts as unresponsive (UNRESPONSIVE_READ_S applies)."""

    def __init__(self, hold_s: float):
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self._error: ClusterUnreachable | None = None
        self._until = 0.0

    def check(self) -> None:
        with self._lock:
            error = self._error if time.monotonic() < self._until else None
        if error is not None:
            raise ClusterUnreachable(error.cluster, error.server, error.cause, error.transient, error.unresponsive)

    def timed_out(self, error: ClusterUnreachable) -> None:
        with self._lock:
            self._error, self._until = error, time.monotonic() + self.hold_s

    def unresponsive(self) -> bool:
        """A request timed out and none was answered since."""
        with self._lock:
            return self._error is not None

    def answered(self) -> None:
        with self._lock:
            self._error = None


class _Transport:
    """The connections to one cluster's API server, and the one place every
    request goes through (verbs, discovery, the version): fenced by WRITE_GUARD,
    counted, time-limited and retried when transient. A failure to reach the
    server leaves it as a ClusterUnreachable, a refusal as an ApiError.

    The TLS context is built once from the kubeconfig (engine/cluster/kubeconfig.py), so a
    new connection does not load the CA again; the pool holds a connection for each
    of the client's workers and POOL_RESERVE more, and a request beyond that waits
    for one to be free rather than opening a connection the pool would discard
    (urllib3's "Connection pool is full" warning). urllib3's own retries are off
    (they would multiply the time limit): the loop here retries what is worth it.
    A watch has a connection of its own (open_stream): it is held for minutes."""

    USER_AGENT = "prefect-gitops"

    def __init__(self, access: ClusterAccess, *, max_workers: int, counter: RequestCounter, retry: RetryPolicy,
                 timeout: RequestTimeout, cluster: str | None):
        self.access = access
        self.counter, self.retry, self.timeout, self.cluster = counter, retry, timeout, cluster
        self._fail_fast = _FailFast(FAIL_FAST_S)
        self._pool = _pool_of(access, max_workers + POOL_RESERVE)

    def close(self) -> None:
        self._pool.clear()

    def request(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                body: Any = None, content_type: str = "application/json",
                headers: dict[str, str] | None = None) -> dict:
        """The server's JSON answer to one request, `path` below the server's URL."""
        query = query or []
        url = self.access.server + path + (f"?{urlencode(query)}" if query else "")
        verb = request_verb(method, url, query)
        dry_run = any(key == "dryRun" for key, _ in query)
        if verb in WRITE_VERBS and not dry_run and (guard := WRITE_GUARD.get()) is not None:
            guard()
        limit = self._limit()
        sent = self._headers(headers)
        data = None
        if body is not None:
            data, sent["Content-Type"] = json.dumps(body).encode(), content_type
        return self._attempt(verb, dry_run, url, limit, lambda: self._send(method, url, data, sent, limit))

    def open_stream(self, path: str, query: list[tuple[str, str]], read_s: float,
                    headers: dict[str, str] | None = None) -> "Stream":
        """A watch's answer, its body still to be read: on a connection of its own
        (a pool of one, closed with the stream), with `read_s` as the limit between
        two bytes of it."""
        url = self.access.server + path + f"?{urlencode(query)}"
        limit = RequestTimeout(self._limit().connect_s, read_s)
        sent = self._headers(headers)

        def send() -> Stream:
            pool = _pool_of(self.access, 1)
            response = pool.request("GET", url, headers=sent, timeout=limit.for_urllib3(), retries=False,
                                    redirect=False, preload_content=False)
            self._fail_fast.answered()
            if response.status >= 400:
                data = response.read()
                pool.clear()
                raise ApiError.from_answer(response.status, response.reason or "", data,
                                           response.headers.get("Retry-After"))
            return Stream(self, response, pool, limit)

        return self._attempt(request_verb("GET", url, query), False, url, limit, send)

    def unreachable(self, error: BaseException, limit: RequestTimeout) -> "ClusterUnreachable | None":
        """`error` as a ClusterUnreachable naming this cluster (None when it was an
        answer of the server or a bug); a timeout makes new requests fail fast."""
        unreachable = ClusterUnreachable.from_error(self.cluster, self.access.server, error, limit)
        if unreachable is not None and _is_timeout(error):
            self._fail_fast.timed_out(unreachable)
        return unreachable

    def _limit(self) -> RequestTimeout:
        """The time limit of a request starting now; raises at once while failing fast."""
        self._fail_fast.check()
        if self._fail_fast.unresponsive():
            return RequestTimeout(self.timeout.connect_s, min(self.timeout.read_s, UNRESPONSIVE_READ_S))
        return self.timeout

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        return {"Accept": "application/json", "User-Agent": self.USER_AGENT, **self.access.auth_headers(),
                **(headers or {})}

    def _attempt(self, verb: str, dry_run: bool, url: str, limit: RequestTimeout, send: Callable[[], R]) -> R:
        """send(), counted each time, and tried again after a transient failure."""
        for attempt in range(self.retry.attempts):
            self.counter.count(verb, dry_run)
            try:
                return send()
            except Exception as error:
                if attempt + 1 >= self.retry.attempts or not is_retryable(error) or _is_timeout(error):
                    unreachable = self.unreachable(error, limit)
                    if unreachable is None:
                        raise
                    raise unreachable from error
                wait = max(self.retry.delay(attempt), min(_retry_after(error), self.retry.max_delay))
                log.warning("%s %s failed (%s), retrying in %.1fs", verb, urlsplit(url).path,
                            getattr(error, "code", None) or type(error).__name__, wait)
                time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str],
              limit: RequestTimeout) -> dict:
        response = self._pool.request(method, url, body=data, headers=headers, timeout=limit.for_urllib3(),
                                      retries=False, redirect=False)
        self._fail_fast.answered()  # an answer, if a refusal
        if response.status >= 400:
            raise ApiError.from_answer(response.status, response.reason or "", response.data,
                                       response.headers.get("Retry-After"))
        return json.loads(response.data or b"{}")


class Stream:
    """The body of a watch, read as the server sends it: one event (a JSON object
    a line) at a time. A failure to read it is a ClusterUnreachable, as for any
    request; close() may be called from another thread to end a read under way."""

    def __init__(self, transport: _Transport, response: urllib3.BaseHTTPResponse, pool: urllib3.PoolManager,
                 limit: RequestTimeout):
        self._transport, self._response, self._pool, self._limit = transport, response, pool, limit
        self._closed = False

    def events(self) -> Iterator[dict]:
        """Each event the server sends, until it ends the watch."""
        pending = b""
        try:
            for chunk in self._response.stream(64 * 1024):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from (json.loads(line) for line in lines if line.strip())
        except Exception as error:
            if self._closed:
                return
            unreachable = self._transport.unreachable(error, self._limit)
            if unreachable is None:
                raise
            raise unreachable from error
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # wake a thread blocked in a read of it
            self._response.shutdown()
        self._response.close()
        self._pool.clear()


def _pool_of(access: ClusterAccess, size: int) -> urllib3.PoolManager:
    """Connections to the server, at most `size` at a time (a request beyond them
    waits for one)."""
    options: dict[str, Any] = {"maxsize": size, "block": True, "retries": False}
    if access.ssl_context is not None:
        options["ssl_context"] = access.ssl_context
        options["cert_reqs"] = access.ssl_context.verify_mode  # urllib3 sets it on the context again
        if access.tls_server_name:
            options["server_hostname"] = access.tls_server_name
    if access.proxy_url:
        return urllib3.ProxyManager(access.proxy_url, num_pools=2, **options)
    return urllib3.PoolManager(num_pools=2, **options)


# ---- errors -----------------------------------------------------------------------

_IMMUTABLE_HINTS = ("immutable", "may not change once set", "may not be changed")
_TYPED_PATCH_ERROR = re.compile(r"failed to create typed patch object \([^)]*\): (?P<detail>.*)", re.DOTALL)


class ClusterUnreachable(Exception):
    """The API server could not be reached or did not answer in time, in plain
    words: "cluster production (https://10.0.0.1:6443) is unreachable: connection
    refused". `transient` is False for a TLS failure (a wrong certificate stays
    wrong); `unresponsive` when the server took a connection but did not answer in
    time: a timeout already waited its limit, so it is not retried."""

    def __init__(self, cluster: str | None, server: str, cause: str, transient: bool = True,
                 unresponsive: bool = False):
        self.cluster, self.server, self.cause = cluster, server, cause
        self.transient, self.unresponsive = transient, unresponsive
        where = f"cluster {cluster} ({server})" if cluster else f"the cluster at {server}"
        super().__init__(f"{where} is unreachable: {cause}")

    def __reduce__(self):  # pickled with a task's failed state
        return type(self), (self.cluster, self.server, self.cause, self.transient, self.unresponsive)

    @property
    def may_have_landed(self) -> bool:
        """A write that failed so may have been made: it was sent, and no answer came."""
        return self.unresponsive or self.cause.startswith("connection lost")

    @classmethod
    def from_error(cls, cluster: str | None, server: str, error: BaseException,
                   limit: RequestTimeout | str) -> "ClusterUnreachable | None":
        """The plain-words form of a failure to reach the server; None for any
        other error (an answer the server gave, a bug)."""
        if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
            error = error.reason
        if isinstance(error, (urllib3.exceptions.SSLError, ssl.SSLError)):
            if _closed_mid_tls(error):  # the peer closed it: a reset, which passes when tried again
                return cls(cluster, server, f"connection lost: {_innermost(error)}")
            return cls(cluster, server, f"TLS failed: {_innermost(error)}", transient=False)
        if isinstance(error, urllib3.exceptions.NameResolutionError):
            return cls(cluster, server, "its host name does not resolve")
        if isinstance(error, urllib3.exceptions.NewConnectionError):
            return cls(cluster, server, _innermost(error).lower())
        if _is_timeout(error):
            return cls(cluster, server, f"no answer within the time limit ({limit})", unresponsive=True)
        if isinstance(error, (urllib3.exceptions.ProtocolError, ConnectionError)):
            return cls(cluster, server, f"connection lost: {_innermost(error)}")
        return None


def _closed_mid_tls(error: BaseException) -> bool:
    """A TLS error that is the peer closing the connection (during the handshake or
    a read: a proxy or an API server going away), not a certificate or protocol
    refusal: it passes when tried again, as a reset connection does."""
    return any(isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or "UNEXPECTED_EOF" in str(e)
               for e in _causes(error))


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what caused it, outermost first (urllib3 wraps the socket's
    and ssl's errors in its own, as a cause, a context or an argument)."""
    chain = [error]
    while (inner := error.__cause__ or error.__context__ or next(
            (a for a in error.args if isinstance(a, BaseException)), None)) is not None and inner not in chain:
        chain.append(inner)
        error = inner
    return chain


def _innermost(error: BaseException) -> str:
    """The words of the deepest cause of a connection failure, e.g. "Connection
    refused" out of urllib3's "Failed to establish a new connection: [Errno 111]
    Connection refused"."""
    error = _causes(error)[-1]
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class UnknownKind(LookupError):
    def __init__(self, api_version: str, kind: str):
        super().__init__(f"the cluster does not serve {api_version} {kind}")
        self.api_version, self.kind = api_version, kind


class ApiError(Exception):
    """The API server's refusal, as its Status object. The response body itself is
    never kept: for a Secret it may echo what was sent."""

    def __init__(self, code: int, status: dict):
        self.code = code
        self.status = status
        self.retry_after: str | None = None  # the server's Retry-After, with a 429 or 503
        super().__init__(self.describe())

    @classmethod
    def from_answer(cls, code: int, reason: str, body: bytes, retry_after: str | None = None) -> "ApiError":
        try:
            status = json.loads(body.decode(errors="replace"))
        except ValueError:
            status = None
        if not isinstance(status, dict) or status.get("kind") != "Status":
            status = {"message": f"{code} {reason}".strip()}
        error = cls(code, status)
        error.retry_after = retry_after
        return error

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")

    @property
    def reason(self) -> str:
        return str(self.status.get("reason") or "")

    @property
    def details(self) -> dict:
        details = self.status.get("details")
        return details if isinstance(details, dict) else {}

    @property
    def causes(self) -> list[dict]:
        return [c for c in self.details.get("causes") or [] if isinstance(c, dict)]

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def forbidden(self) -> bool:
        """The cluster's RBAC refused the request (its message names the user,
        the verb and the resource)."""
        return self.code == 403

    def missing_namespace(self) -> str | None:
        """The namespace named by a "namespaces X not found" answer."""
        if self.code == 404 and self.details.get("kind") == "namespaces":
            return str(self.details.get("name") or "") or None
        return None

    def immutable_fields(self) -> list[str]:
        """The fields an update may not change, when that is what was refused."""
        fields = [str(c.get("field") or "") for c in self.causes if is_immutable_message(str(c.get("message") or ""))]
        if fields:
            return [f or "<unnamed field>" for f in fields]
        if self.code in (409, 422) and is_immutable_message(self.message):
            return ["<unnamed field>"]
        return []

    def schema_mismatch(self) -> str | None:
        """Server-side apply's answer to a field of the wrong type or not in the
        schema (a 500 naming the field), as that field's verdict."""
        if typed := _TYPED_PATCH_ERROR.match(self.message):
            return typed["detail"].lstrip(".")
        return None

    def explanations(self) -> list[str]:
        """The refusal, one line per cause the server gives (or one for the whole
        answer); Go structs quoted as the invalid value are elided."""
        if (mismatch := self.schema_mismatch()) is not None:
            return [mismatch]
        if not self.causes:
            return [self.message or f"HTTP {self.code}"]
        return [_describe_cause(c) for c in self.causes]

    def describe(self) -> str:
        text = "; ".join(self.explanations())
        return f"forbidden (HTTP 403): {text}" if self.forbidden else text


def is_immutable_message(text: str) -> bool:
    """Whether the server's message refuses a change to an immutable field."""
    return any(hint in text for hint in _IMMUTABLE_HINTS)


def _describe_cause(cause: dict) -> str:
    text = str(cause.get("message") or cause.get("reason") or "")
    if len(text) > 300 and text.startswith("Invalid value:"):
        text = f"Invalid value: (elided): {text.rpartition(': ')[2]}"
    field = str(cause.get("field") or "")
    return f"{field}: {text}" if field else text


# ---- the client -------------------------------------------------------------------

def service_account_user(namespace: str, name: str) -> str:
    """The user name a ServiceAccount authenticates as."""
    return f"system:serviceaccount:{namespace}:{name}"


class Listing(NamedTuple):
    items: list[dict]
    resource_version: str  # where a watch of the same objects starts


@dataclass(frozen=True)
class Resource:
    """An API resource as discovery gives it: where a kind is served."""

    api_version: str
    kind: str
    name: str  # the plural in the URL, e.g. "deployments"
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = _group_version_path(self.api_version)
        if namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.name}"
        return f"{base}/{quote(name, safe='')}" if name else base


def _group_version_path(api_version: str) -> str:
    """/api/v1 for the core group, /apis/GROUP/VERSION for the others."""
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


# A kind missing from its group-version's list is looked for again (a CRD may
# have been installed since), but not more often than this: a stage asking about
# each of 200 objects of a kind not served yet sends one request, not 200.
UNKNOWN_KIND_RECHECK_S = 0.5


class _Discovery:
    """What a client learned of the cluster's kinds, for the run: the resource
    list of each group-version it was asked about (one GET each, e.g.
    /apis/apps/v1), asked again when a kind is missing from it. Shared with its
    impersonating views, since which kinds a cluster serves is the same for anyone."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport
        self._lock = threading.Lock()
        self._resources: dict[str, dict[str, Resource]] = {}  # by apiVersion, then kind
        self._asked: dict[str, float] = {}  # when each apiVersion's list was fetched (monotonic)

    def resource(self, api_version: str, kind: str) -> Resource:
        with self._lock:
            found = self._resources.get(api_version, {}).get(kind)
            asked = self._asked.get(api_version)
            if found is None and (asked is None or time.monotonic() - asked >= UNKNOWN_KIND_RECHECK_S):
                self._resources[api_version] = self._discover(api_version)
                self._asked[api_version] = time.monotonic()
                found = self._resources[api_version].get(kind)
        if found is None:
            raise UnknownKind(api_version, kind)
        return found

    def forget(self) -> None:
        with self._lock:
            self._resources.clear()
            self._asked.clear()

    def _discover(self, api_version: str) -> dict[str, Resource]:
        try:
            listed = self._transport.request("GET", _group_version_path(api_version))
        except ApiError as error:
            if error.not_found:  # the group or version is not served at all
                return {}
            raise
        return {r["kind"]: Resource(api_version, r["kind"], r["name"], bool(r.get("namespaced")))
                for r in listed.get("resources") or [] if "/" not in r["name"]}  # not subresources


class KubeClient:
    """A cluster for one run: its connections (_Transport), whose every request is
    counted and retried if transient, and its discovery, cached for the run and
    asked again when a kind is unknown. `impersonating()` gives a view of it whose
    verbs act as another user."""

    def __init__(self, access: ClusterAccess, *, max_workers: int = DEFAULT_WORKERS,
                 retry: RetryPolicy = RetryPolicy(), timeout: RequestTimeout = RequestTimeout(),
                 name: str | None = None):
        self.max_workers = max_workers
        self.counter = RequestCounter()
        self.timeout = timeout
        self.name = name  # the cluster's name for messages, e.g. its block's
        self._transport = _Transport(access, max_workers=max_workers, counter=self.counter, retry=retry,
                                     timeout=timeout, cluster=name)
        self._discovery = _Discovery(self._transport)
        self.impersonated: str | None = None  # the user the verbs act as; None: the kubeconfig's own
        self._headers: dict[str, str] = {}
        self._view = False

    @classmethod
    def for_cluster(cls, cluster: Cluster, **kwargs: Any) -> "KubeClient":
        return cls(cluster.access(), name=cluster.name, **kwargs)

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike, context: str | None = None, **kwargs: Any) -> "KubeClient":
        return cls(load_access_file(path, context), **kwargs)

    def impersonating(self, user: str) -> "KubeClient":
        """This client acting as `user`, as `kubectl --as=USER` does: the same
        connections, discovery and request counts, and the request of every verb
        (get, list, apply and its dry-run, create, update, delete) carries
        `Impersonate-User`, so the cluster's RBAC decides as for that user.

        For a ServiceAccount (service_account_user()) the API server adds its
        fixed groups itself (system:serviceaccounts, system:serviceaccounts:NS,
        system:authenticated) and asks only that our own credentials may
        `impersonate` that ServiceAccount. Sending Impersonate-Group too would make
        it a plain user impersonation, needing `impersonate` on users and groups.
        Discovery and server_version() stay the client's own. Closing a view
        closes nothing: the client it came from owns the connections."""
        view = copy(self)
        view.impersonated, view._headers, view._view = user, {"Impersonate-User": user}, True
        return view

    def close(self) -> None:
        if not self._view:
            self._transport.close()

    def __enter__(self) -> "KubeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counting

    @property
    def requests(self) -> dict[str, int]:
        """Requests sent so far by verb: GET, LIST, POST, PATCH, PUT, DELETE."""
        return self.counter.snapshot()

    @property
    def writes(self) -> dict[str, int]:
        """Requests so far that changed the cluster (not dry-run), by verb."""
        return self.counter.writes()

    def reset_requests(self) -> dict[str, int]:
        return self.counter.reset()

    # -- discovery

    def resource(self, api_version: str, kind: str) -> Resource:
        """The API resource serving a kind; UnknownKind when the cluster serves none."""
        return self._discovery.resource(api_version, kind)

    def serves(self, api_version: str, kind: str) -> bool:
        try:
            self.resource(api_version, kind)
        except UnknownKind:
            return False
        return True

    def invalidate_discovery(self) -> None:
        """Forget what was discovered, e.g. after CRDs were applied."""
        self._discovery.forget()

    def namespaced(self, api_version: str, kind: str) -> bool:
        return self.resource(api_version, kind).namespaced

    def server_version(self) -> str:
        """The server's version as it reports it, e.g. "v1.37.2"."""
        return str(self._transport.request("GET", "/version").get("gitVersion") or "")

    # -- verbs; each returns plain dicts and raises ApiError or UnknownKind

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict | None:
        """The live object, or None when there is none."""
        resource = self.resource(api_version, kind)
        try:
            return self._request("GET", resource.path(_ns(resource, namespace), name))
        except ApiError as error:
            if error.not_found:
                return None
            raise

    def get_if_readable(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict | None:
        """The live object, or None when there is none or it cannot be read (a kind
        not served, a GET refused): for a look before a dry-run, which then says why."""
        try:
            return self.get(api_version, kind, name, namespace)
        except (ApiError, UnknownKind):
            return None

    def list(self, api_version: str, kind: str, namespace: str = "", label_selector: str | None = None) -> list[dict]:
        return self.listing(api_version, kind, namespace, label_selector).items

    def listing(self, api_version: str, kind: str, namespace: str = "", label_selector: str | None = None,
                field_selector: str | None = None) -> "Listing":
        """The objects of a kind (in a namespace, matching the selectors) and the
        resourceVersion they were read at, in pages of LIST_PAGE_SIZE. The pages
        are one snapshot; if the server let it expire before the last page (410),
        the list starts again from the first."""
        resource = self.resource(api_version, kind)
        path = resource.path(_ns(resource, namespace))
        query = _selectors(label_selector, field_selector)
        for attempt in range(3):
            try:
                return self._listing(path, query, api_version, kind)
            except ApiError as error:
                if error.code != 410 or attempt == 2:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _listing(self, path: str, query: list[tuple[str, str]], api_version: str, kind: str) -> "Listing":
        items: list[dict] = []
        token = ""
        while True:
            page = [("limit", str(LIST_PAGE_SIZE))] + ([("continue", token)] if token else [])
            answer = self._request("GET", path, query=query + page)
            for item in answer.get("items") or []:  # the API leaves both out of a LIST's items; kubectl puts them back
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(item)
            metadata = answer.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                return Listing(items, str(metadata.get("resourceVersion") or ""))

    def watch(self, api_version: str, kind: str, namespace: str, resource_version: str, *,
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_s: int = 20) -> Stream:
        """The changes to a kind's objects after `resource_version`, with
        bookmarks, until the server ends the watch after `timeout_s`. The read
        limit is the client's, or 10 s more than `timeout_s`: a server that ends
        its watch on time is never taken for one that stopped answering."""
        resource = self.resource(api_version, kind)
        query = [("watch", "1"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(timeout_s)), *_selectors(label_selector, field_selector)]
        return self._transport.open_stream(resource.path(_ns(resource, namespace)), query,
                                           read_s=max(self.timeout.read_s, timeout_s + 10), headers=self._headers or None)

    def apply(self, body: dict, *, dry_run: bool = False, field_manager: str = FIELD_MANAGER,
              force: bool = True) -> dict:
        """Server-side apply; unknown or duplicate fields are errors (Strict), as
        with kubectl, never silently dropped."""
        resource, namespace, name = self._placed(body)
        query = [("fieldManager", field_manager), ("fieldValidation", "Strict")]
        query += [("force", "true")] if force else []
        query += [("dryRun", "All")] if dry_run else []
        return self._request("PATCH", resource.path(namespace, name), query=query, body=body,
                             content_type="application/apply-patch+yaml")

    def create(self, body: dict) -> dict:
        """Create an object (POST); an ApiError with code 409 when it exists already."""
        resource, namespace, _ = self._placed(body)
        return self._request("POST", resource.path(namespace), body=body)

    def update(self, body: dict) -> dict:
        """Replace an object (PUT). With metadata.resourceVersion it is a
        compare-and-swap: an ApiError with code 409 when the object changed since."""
        resource, namespace, name = self._placed(body)
        return self._request("PUT", resource.path(namespace, name), body=body)

    def delete(self, api_version: str, kind: str, name: str, namespace: str = "", *,
               propagation: str = "Background", uid: str | None = None) -> bool:
        """Delete one object; False when it was already gone. With `uid`, only
        that very object (not one re-created under the same name since)."""
        resource = self.resource(api_version, kind)
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self._request("DELETE", resource.path(_ns(resource, namespace), name), body=options)
        except ApiError as error:
            if error.not_found:
                return False
            raise
        return True

    def map(self, fn: Callable[[T], R], items: Iterable[T], max_workers: int | None = None) -> list[R]:
        """fn over items on at most max_workers (and never more than the client's) threads."""
        return run_bounded(fn, items, min(max_workers or self.max_workers, self.max_workers))

    def _placed(self, body: dict) -> tuple[Resource, str | None, str | None]:
        """The resource, namespace and name an object is written to."""
        meta = body.get("metadata") or {}
        resource = self.resource(body["apiVersion"], body["kind"])
        namespace = _ns(resource, meta.get("namespace") or "")
        if resource.namespaced and not namespace:
            raise ValueError(f"{body['kind']} {meta.get('name')}: a namespaced object without a namespace")
        return resource, namespace, meta.get("name")

    def _request(self, method: str, path: str, **kwargs: Any) -> dict:
        return self._transport.request(method, path, headers=self._headers or None, **kwargs)


def dry_run_object(kube: KubeClient, body: dict) -> dict:
    """What the server would make of `body` if it were applied now: a server-side
    apply as FIELD_MANAGER with dryRun=All and Strict field validation, writing
    nothing. The one dry-run of the engine, shared by validation and diff. Raises
    ApiError (the server's refusal) or UnknownKind."""
    return kube.apply(body, dry_run=True)


def _selectors(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    """The query parameters of a LIST's or a watch's selectors."""
    return [(key, value) for key, value in (("labelSelector", label_selector), ("fieldSelector", field_selector))
            if value]


def _ns(resource: Resource, namespace: str) -> str | None:
    return (namespace or None) if resource.namespaced else None
