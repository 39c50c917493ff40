"""A lock per app and cluster, held in the cluster itself as a Lease, so that two
syncs of the same app never interleave, whichever machine or worker runs them.

The Lease outlives a crashed holder only for its duration: a holder that stops
renewing loses it, so a killed run never blocks the app for good."""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
from typing import Iterator

import kubernetes
from kubernetes.client.rest import ApiException

LOCK_NAMESPACE = "gitops-system"
LEASE_DURATION_S = 60
RENEW_EVERY_S = 15
POLL_S = 0.5


class LockTimeout(Exception):
    pass


def lease_name(app: str) -> str:
    return f"gitops-sync-{app}"


@contextlib.contextmanager
def app_lock(api_client: kubernetes.client.ApiClient, app: str, holder: str, wait_s: float = 120) -> Iterator[None]:
    """Hold the app's Lease for the duration of the block; wait at most wait_s for it."""
    leases = kubernetes.client.CoordinationV1Api(api_client)
    _ensure_namespace(api_client)
    _acquire(leases, app, holder, wait_s)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until, args=(leases, app, holder, stop), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        _release(leases, app, holder)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _body(app: str, holder: str, resource_version: str | None = None) -> kubernetes.client.V1Lease:
    return kubernetes.client.V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(name=lease_name(app), namespace=LOCK_NAMESPACE,
                                                resource_version=resource_version,
                                                labels={"app.kubernetes.io/managed-by": "prefect-gitops"}),
        spec=kubernetes.client.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=LEASE_DURATION_S,
                                           acquire_time=_now(), renew_time=_now()),
    )


def _free(lease: kubernetes.client.V1Lease, holder: str) -> bool:
    spec = lease.spec
    if not spec.holder_identity or spec.holder_identity == holder:
        return True
    renewed = spec.renew_time or spec.acquire_time
    return renewed is None or (_now() - renewed).total_seconds() > (spec.lease_duration_seconds or LEASE_DURATION_S)


def _acquire(leases: kubernetes.client.CoordinationV1Api, app: str, holder: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    other = None
    while True:
        try:
            lease = leases.read_namespaced_lease(lease_name(app), LOCK_NAMESPACE)
        except ApiException as error:
            if error.status != 404:
                raise
            lease = None
        try:
            if lease is None:
                leases.create_namespaced_lease(LOCK_NAMESPACE, _body(app, holder))
                return
            if _free(lease, holder):
                # The resourceVersion makes this a compare-and-swap: of two takers, one wins.
                leases.replace_namespaced_lease(lease_name(app), LOCK_NAMESPACE,
                                                _body(app, holder, lease.metadata.resource_version))
                return
            other = lease.spec.holder_identity
        except ApiException as error:
            if error.status not in (409, 422):
                raise
        if time.monotonic() > deadline:
            raise LockTimeout(f"app {app} is being synced by {other or 'another run'}: "
                              f"waited {wait_s:.0f} s for the Lease {LOCK_NAMESPACE}/{lease_name(app)}")
        time.sleep(POLL_S)


def _renew_until(leases: kubernetes.client.CoordinationV1Api, app: str, holder: str, stop: threading.Event) -> None:
    while not stop.wait(RENEW_EVERY_S):
        with contextlib.suppress(ApiException):
            lease = leases.read_namespaced_lease(lease_name(app), LOCK_NAMESPACE)
            if lease.spec.holder_identity == holder:
                lease.spec.renew_time = _now()
                leases.replace_namespaced_lease(lease_name(app), LOCK_NAMESPACE, lease)


def _release(leases: kubernetes.client.CoordinationV1Api, app: str, holder: str) -> None:
    """Clear the holder rather than delete: an update, not a DELETE, in the request counts."""
    with contextlib.suppress(ApiException):
        lease = leases.read_namespaced_lease(lease_name(app), LOCK_NAMESPACE)
        if lease.spec.holder_identity == holder:
            lease.spec.holder_identity = None
            leases.replace_namespaced_lease(lease_name(app), LOCK_NAMESPACE, lease)


def _ensure_namespace(api_client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    try:
        core.read_namespace(LOCK_NAMESPACE)
    except ApiException as error:
        if error.status != 404:
            raise
        with contextlib.suppress(ApiException):  # 409: another run created it meanwhile
            core.create_namespace(kubernetes.client.V1Namespace(
                metadata=kubernetes.client.V1ObjectMeta(name=LOCK_NAMESPACE)))
