"""Following the objects of one scope as the API server changes them: a Follower
lists them once (in pages), then watches from that list's resourceVersion, as
`kubectl wait` and client-go's reflectors do. While nothing changes, nothing is
read and nothing is parsed.

What a watch brings, and what a Follower does about it:
- the server ends the watch (after WATCH_TIMEOUT_S, or as it shuts down): watch
  again from the last resourceVersion (bookmarks keep that recent);
- 410 Gone (that resourceVersion is older than the server keeps, e.g. after an API
  server restart): list again;
- a connection dropped or refused, a 429 or 5xx once the follower has started:
  try again, backing off, for RESUME_WITHIN_S (an API server restart), then give
  up with the error (before it started, at once: the caller's retries decide);
- no answer within a read limit (a paused server): give up at once, as every
  request does (engine/cluster/kube.py);
- a kind not served (its CRD not established yet) or a refusal (a 403): keep it as
  `refusal` and ask again, backing off."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from prefect_gitops.engine.cluster.kube import ApiError, KubeClient, Stream, UnknownKind, is_retryable

# The server ends a watch after this long; it is watched again from where it was.
WATCH_TIMEOUT_S = 20
# How long a follower keeps trying a server that went away: a local API server
# restarts in about 8 s.
RESUME_WITHIN_S = 15.0
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 8.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scope:
    """Which objects a Follower follows: a kind, in a namespace ("" for all or
    for a cluster-scoped kind), matching the selectors."""

    api_version: str
    kind: str
    namespace: str = ""
    label_selector: str | None = None
    field_selector: str | None = None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        selected = ", ".join(s for s in (self.label_selector, self.field_selector) if s)
        return f"{self.api_version} {self.kind}{where}" + (f" ({selected})" if selected else "")


class _Expired(Exception):
    """The resourceVersion to watch from is gone from the server (410)."""


# What a follower tells its owner, from its own thread: the names of objects that
# changed, or None when the whole scope did (it was refused, or failed).
OnChange = Callable[["Follower", "set[str] | None"], None]


class Follower:
    """The objects of one Scope, kept current by a thread of their own. `keep(obj)`
    decides which objects are kept (the rest count as absent); `on_change` hears
    of every change. With `follow=False` the objects are listed once."""

    def __init__(self, kube: KubeClient, scope: Scope, on_change: OnChange,
                 keep: Callable[[dict], bool] = lambda obj: True, follow: bool = True):
        self.kube, self.scope, self.on_change, self.keep, self.follow = kube, scope, on_change, keep, follow
        self.refusal: UnknownKind | ApiError | None = None  # why the objects could not be read; asked again
        self.error: BaseException | None = None  # why the follower gave up
        self.listed = threading.Event()  # set once the first list has an outcome
        self._objects: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._stream: Stream | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"gitops-watch {scope}")

    def start(self) -> "Follower":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if (stream := self._stream) is not None:
            stream.close()

    def get(self, name: str) -> dict | None:
        return self._objects.get(name)

    def objects(self) -> list[dict]:
        with self._lock:
            return list(self._objects.values())

    def count(self) -> int:
        return len(self._objects)

    # -- the thread

    def _run(self) -> None:
        version: str | None = None  # where to watch from; None: list first
        trouble = _Trouble()
        while not self._stopped.is_set():
            try:
                if version is None:
                    version = self._list()
                    if not self.follow:
                        return
                stream = self._open(version)
                trouble.over()
                version = self._follow(stream, version)
            except _Expired:
                log.debug("%s: resourceVersion %s expired, listing again", self.scope, version)
                version = None
                continue
            except Exception as error:  # one place decides: refused, tried again, or given up
                if not self._bear(error, trouble):
                    return
                self._stopped.wait(trouble.next_delay())

    def _list(self) -> str:
        s = self.scope
        listing = self.kube.listing(s.api_version, s.kind, s.namespace, s.label_selector, s.field_selector)
        kept = {obj["metadata"]["name"]: obj for obj in listing.items if self.keep(obj)}
        with self._lock:
            changed = set(self._objects) | set(kept)
            self._objects, self.refusal = kept, None
        self.listed.set()
        self.on_change(self, changed)
        return listing.resource_version

    def _open(self, version: str) -> Stream:
        s = self.scope
        try:
            stream = self.kube.watch(s.api_version, s.kind, s.namespace, version, label_selector=s.label_selector,
                                     field_selector=s.field_selector, timeout_s=WATCH_TIMEOUT_S)
        except ApiError as error:
            if error.code == 410:
                raise _Expired() from error
            raise
        self._stream = stream
        if self._stopped.is_set():  # stop() came between the request and here
            stream.close()
        return stream

    def _follow(self, stream: Stream, version: str) -> str:
        """Apply the stream's events; the resourceVersion to watch from next."""
        for event in stream.events():
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired()
                raise ApiError(int(obj.get("code") or 500), obj)
            metadata = obj.get("metadata") or {}
            version = metadata.get("resourceVersion") or version
            if event.get("type") != "BOOKMARK" and self._store(metadata.get("name", ""), obj, event.get("type")):
                self.on_change(self, {metadata.get("name", "")})
        return version

    def _store(self, name: str, obj: dict, change: str | None) -> bool:
        """Keep or drop one object; whether what is kept changed."""
        kept = change != "DELETED" and self.keep(obj)
        with self._lock:
            had = self._objects.pop(name, None) is not None
            if kept:
                self._objects[name] = obj
        return kept or had

    def _bear(self, error: Exception, trouble: "_Trouble") -> bool:
        """Whether to try again after `error`: a refusal is kept and asked again;
        a transient failure is tried again quietly while bearable; anything else
        is the follower's error. A single look tries nothing again."""
        if isinstance(error, UnknownKind) or (isinstance(error, ApiError) and not is_retryable(error)):
            self.refusal = error
        elif self.follow and is_retryable(error) and trouble.bearable():
            return True
        else:
            self.error = error
        self.listed.set()
        self.on_change(self, None)
        return self.error is None and self.follow


class _Trouble:
    """Backoff between tries, and how long a server that was reached once has
    been out of reach since."""

    def __init__(self) -> None:
        self.started = False
        self.since: float | None = None
        self.delay = FIRST_RETRY_S

    def over(self) -> None:
        self.started, self.since, self.delay = True, None, FIRST_RETRY_S

    def bearable(self) -> bool:
        """Reached once, and out of reach for no longer than RESUME_WITHIN_S."""
        now = time.monotonic()
        self.since = self.since if self.since is not None else now
        return self.started and now - self.since <= RESUME_WITHIN_S

    def next_delay(self) -> float:
        """The wait before the next try: doubling, and while out of reach never
        past the end of the window (the last try then comes at its end)."""
        delay, self.delay = self.delay, min(self.delay * 2, MAX_RETRY_S)
        if self.since is not None:
            delay = min(delay, max(RESUME_WITHIN_S - (time.monotonic() - self.since), 0.0))
        return delay
