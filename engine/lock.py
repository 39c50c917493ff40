"""A lock per app and cluster, held in the cluster itself as a Lease, so that two
syncs of the same app never interleave, whichever machine or worker runs them.

The Lease outlives a crashed holder only for its duration: a holder that stops
renewing loses it, so a killed run never blocks the app for good."""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from typing import Iterator

from engine.kube import ApiError, KubeClient

LOCK_NAMESPACE = "gitops-system"
LEASE_API_VERSION = "coordination.k8s.io/v1"
LEASE_DURATION_S = 60
RENEW_EVERY_S = 15
POLL_S = 0.5

log = logging.getLogger(__name__)


class LockTimeout(Exception):
    pass


def lease_name(app: str) -> str:
    return f"gitops-sync-{app}"


@contextlib.contextmanager
def app_lock(kube: KubeClient, app: str, holder: str, wait_s: float = 120) -> Iterator[None]:
    """Hold the app's Lease for the duration of the block; wait at most wait_s for it."""
    _ensure_namespace(kube)
    _acquire(kube, app, holder, wait_s)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until, args=(kube, app, holder, stop), daemon=True,
                               name=f"gitops-lease-{app}")
    renewer.start()
    try:
        yield
    finally:
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


def _free(lease: dict, holder: str) -> bool:
    spec = _spec(lease)
    if not spec.get("holderIdentity") or spec["holderIdentity"] == holder:
        return True
    renewed = _parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or LEASE_DURATION_S
    return renewed is None or (_now() - renewed).total_seconds() > duration


def _acquire(kube: KubeClient, app: str, holder: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    other = None
    while True:
        try:
            lease = _get(kube, app)
            if lease is None:
                kube.create(_body(app, holder))
                return
            if _free(lease, holder):
                # The resourceVersion makes this a compare-and-swap: of two takers, one wins.
                kube.update(_body(app, holder, (lease.get("metadata") or {}).get("resourceVersion")))
                return
            other = _spec(lease).get("holderIdentity")
        except ApiError as error:
            if error.code not in (409, 422):  # another taker was first: look again
                raise
        if time.monotonic() > deadline:
            raise LockTimeout(f"app {app} is being synced by {other or 'another run'}: "
                              f"waited {wait_s:.0f} s for the Lease {LOCK_NAMESPACE}/{lease_name(app)}")
        time.sleep(POLL_S)


def _renew_until(kube: KubeClient, app: str, holder: str, stop: threading.Event) -> None:
    """Renew every RENEW_EVERY_S until stopped. A failed renewal is logged, never
    raised: the thread must outlive a blip, and the next renewal tries again."""
    while not stop.wait(RENEW_EVERY_S):
        try:
            _renew(kube, app, holder)
        except Exception as error:  # noqa: BLE001 - a thread's exception would only print a traceback
            log.warning("renewing the Lease %s/%s failed (%s): %s", LOCK_NAMESPACE, lease_name(app),
                        type(error).__name__, error)


def _renew(kube: KubeClient, app: str, holder: str) -> None:
    lease = _get(kube, app)
    if lease is not None and _spec(lease).get("holderIdentity") == holder:
        lease["spec"]["renewTime"] = _micro_time(_now())
        kube.update(lease)


def _release(kube: KubeClient, app: str, holder: str) -> None:
    """Clear the holder rather than delete: an update, not a DELETE, in the request
    counts. A failure is logged: the Lease then expires by itself."""
    try:
        lease = _get(kube, app)
        if lease is not None and _spec(lease).get("holderIdentity") == holder:
            lease["spec"].pop("holderIdentity", None)
            kube.update(lease)
    except ApiError as error:
        log.warning("releasing the Lease %s/%s failed: %s", LOCK_NAMESPACE, lease_name(app), error)


def _ensure_namespace(kube: KubeClient) -> None:
    if kube.get("v1", "Namespace", LOCK_NAMESPACE) is not None:
        return
    try:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LOCK_NAMESPACE}})
    except ApiError as error:
        if error.code != 409:  # 409: another run created it meanwhile
            raise
