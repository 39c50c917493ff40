"""A lock per app and cluster, held in the cluster itself as a Lease, so that two
syncs of the same app never interleave, whichever machine or worker runs them.

The Lease outlives a crashed holder only for its duration: a holder that stops
renewing loses it, so a killed run never blocks the app for good. A holder on this
machine whose process is gone frees it at once.

Fencing: the holder writes only while its Lease is surely its own. It renews every
10 s; a write (KubeClient's WRITE_GUARD) starts only within 25 s of the last
renewal that the server confirmed (timed from when that renewal was sent), so with
the 30 s read limit of a request, every write lands or is given up before the 60 s
Lease can run out and another run take it. A holder that cannot renew (a stalled
server, a partition) stops writing with LeaseLost. Takers judge expiry by their own
clock against the renewTime the holder wrote: clocks of machines running syncs of
one app must agree within the 5 s margin left."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import threading
import time
from typing import Iterator

from prefect_gitops.engine.cluster.kube import WRITE_GUARD, ApiError, KubeClient

LOCK_NAMESPACE = "gitops-system"
LEASE_API_VERSION = "coordination.k8s.io/v1"
LEASE_DURATION_S = 60
RENEW_EVERY_S = 10
WRITE_WINDOW_S = 25  # after a confirmed renewal; see the module doc
POLL_S = 0.5

log = logging.getLogger(__name__)


class LockTimeout(Exception):
    pass


class LeaseLost(Exception):
    """The holder could not renew its Lease in time: it writes nothing more."""


def lease_name(app: str) -> str:
    return f"gitops-sync-{app}"


def holder_identity(run: str) -> str:
    """Who holds a Lease: the run, and the process on this host that runs it."""
    return f"{run} {socket.gethostname()}/{os.getpid()}"


class _Fence:
    """When the Lease was last confirmed ours; refuses writes once that is too long ago."""

    def __init__(self, app: str, confirmed: float):
        self.app = app
        self.confirmed = confirmed  # when the request that last took or renewed the Lease was sent
        self.renewal_error = ""  # why the last renewal failed, if it did

    def check(self) -> None:
        silent_s = time.monotonic() - self.confirmed
        if silent_s > WRITE_WINDOW_S:
            why = f"{self.renewal_error}; " if self.renewal_error else ""
            raise LeaseLost(f"{why}the Lease {LOCK_NAMESPACE}/{lease_name(self.app)} was last renewed "
                            f"{silent_s:.0f} s ago (limit {WRITE_WINDOW_S} s): another sync may hold it now, "
                            "so nothing more is written")


@contextlib.contextmanager
def app_lock(kube: KubeClient, app: str, holder: str, wait_s: float = 120) -> Iterator[None]:
    """Hold the app's Lease for the duration of the block, writes fenced by it;
    wait at most wait_s for it."""
    _ensure_namespace(kube)
    fence = _Fence(app, confirmed=_acquire(kube, app, holder, wait_s))
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until, args=(kube, app, holder, stop, fence), daemon=True,
                               name=f"gitops-lease-{app}")
    renewer.start()
    guard = WRITE_GUARD.set(fence.check)
    try:
        yield
    finally:
        WRITE_GUARD.reset(guard)
        stop.set()
        renewer.join()
        _release(kube, app, holder)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _micro_time(moment: datetime.datetime) -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: object) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _get(kube: KubeClient, app: str) -> dict | None:
    return kube.get(LEASE_API_VERSION, "Lease", lease_name(app), LOCK_NAMESPACE)


def _body(app: str, holder: str, resource_version: str | None = None) -> dict:
    metadata = {"name": lease_name(app), "namespace": LOCK_NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": "prefect-gitops"}}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    now = _micro_time(_now())
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": LEASE_DURATION_S,
                     "acquireTime": now, "renewTime": now}}


def _spec(lease: dict) -> dict:
    return lease.get("spec") or {}


def _expires(lease: dict) -> datetime.datetime | None:
    spec = _spec(lease)
    renewed = _parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or LEASE_DURATION_S
    return None if renewed is None else renewed + datetime.timedelta(seconds=duration)


def _dead_here(holder: str) -> bool:
    """The holder is a process of this host that no longer runs (killed): its
    Lease is free without waiting for it to expire."""
    _, _, where = holder.rpartition(" ")
    host, _, pid = where.rpartition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _free(lease: dict, holder: str) -> bool:
    current = _spec(lease).get("holderIdentity")
    if not current or current == holder or _dead_here(current):
        return True
    expires = _expires(lease)
    return expires is None or _now() > expires


def _acquire(kube: KubeClient, app: str, holder: str, wait_s: float) -> float:
    """Take the Lease; when (monotonic) the request that took it was sent."""
    deadline = time.monotonic() + wait_s
    seen = None
    while True:
        try:
            lease = _get(kube, app)
            sent = time.monotonic()
            if lease is None:
                kube.create(_body(app, holder))
                return sent
            if _free(lease, holder):
                # The resourceVersion makes this a compare-and-swap: of two takers, one wins.
                kube.update(_body(app, holder, (lease.get("metadata") or {}).get("resourceVersion")))
                return sent
            seen = _waiting_on(app, lease, seen, wait_s)
        except ApiError as error:
            if error.code not in (409, 422):  # another taker was first: look again
                raise
        if time.monotonic() > deadline:
            raise LockTimeout(f"app {app} is being synced by {seen or 'another run'}: "
                              f"waited {wait_s:.0f} s for the Lease {LOCK_NAMESPACE}/{lease_name(app)}")
        time.sleep(POLL_S)


def _waiting_on(app: str, lease: dict, seen: str | None, wait_s: float) -> str:
    """Say once per holder who holds the Lease, and until when unless renewed."""
    current = str(_spec(lease).get("holderIdentity"))
    if current != seen:
        expires = _expires(lease)
        until = expires.strftime("%H:%M:%S UTC") if expires else "an unknown time"
        log.warning("app %s is being synced by %s (its Lease %s/%s runs until %s unless renewed); "
                    "waiting up to %.0f s", app, current, LOCK_NAMESPACE, lease_name(app), until, wait_s)
    return current


def _renew_until(kube: KubeClient, app: str, holder: str, stop: threading.Event, fence: _Fence) -> None:
    """Renew every RENEW_EVERY_S until stopped; each confirmed renewal moves the
    fence on. A failed renewal is logged, never raised: the thread must outlive a
    blip, and the next renewal tries again; meanwhile the fence runs down."""
    while not stop.wait(RENEW_EVERY_S):
        sent = time.monotonic()
        try:
            if _renew(kube, app, holder):
                fence.confirmed, fence.renewal_error = sent, ""
            else:
                fence.renewal_error = "the Lease is held by another run"
        except Exception as error:  # noqa: BLE001 - a thread's exception would only print a traceback
            fence.renewal_error = str(error)
            log.warning("renewing the Lease %s/%s failed (%s): %s", LOCK_NAMESPACE, lease_name(app),
                        type(error).__name__, error)


def _renew(kube: KubeClient, app: str, holder: str) -> bool:
    """Whether the Lease was still ours and is renewed."""
    lease = _get(kube, app)
    if lease is None or _spec(lease).get("holderIdentity") != holder:
        log.error("the Lease %s/%s is no longer held by this run", LOCK_NAMESPACE, lease_name(app))
        return False
    lease["spec"]["renewTime"] = _micro_time(_now())
    kube.update(lease)
    return True


def _release(kube: KubeClient, app: str, holder: str) -> None:
    """Clear the holder rather than delete: an update, not a DELETE, in the request
    counts. Never raises (the sync's own error is the one to report): a failure is
    logged, and the Lease then expires by itself."""
    try:
        lease = _get(kube, app)
        if lease is not None and _spec(lease).get("holderIdentity") == holder:
            lease["spec"].pop("holderIdentity", None)
            kube.update(lease)
    except Exception as error:  # noqa: BLE001 - e.g. the cluster unreachable
        log.warning("releasing the Lease %s/%s failed (it expires by itself): %s", LOCK_NAMESPACE,
                    lease_name(app), error)


def _ensure_namespace(kube: KubeClient) -> None:
    if kube.get("v1", "Namespace", LOCK_NAMESPACE) is not None:
        return
    try:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LOCK_NAMESPACE}})
    except ApiError as error:
        if error.code != 409:  # 409: another run created it meanwhile
            raise
