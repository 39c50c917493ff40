"""The per-app Lease: two holders never overlap, a waiter gives up clearly, and
a holder that died does not block the app for longer than the lease."""

from __future__ import annotations

import datetime
import threading
import time

import kubernetes
import pytest

from blocks import KubernetesCluster
from engine.lock import LOCK_NAMESPACE, LockTimeout, app_lock, lease_name

pytestmark = pytest.mark.cluster


@pytest.fixture
def api_client(local_cluster):
    with KubernetesCluster.from_kubeconfig_file(local_cluster.kubeconfig).api_client() as client:
        yield client


def test_two_holders_never_overlap(api_client, request):
    app = f"lock-{request.node.name[-8:].lower().replace('_', '-')}"
    spans: list[tuple[str, float, float]] = []

    def hold(holder: str) -> None:
        with app_lock(api_client, app, holder, wait_s=30):
            start = time.monotonic()
            time.sleep(1.0)
            spans.append((holder, start, time.monotonic()))

    threads = [threading.Thread(target=hold, args=(f"run-{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == 3
    spans.sort(key=lambda s: s[1])
    for (_, _, end), (_, start, _) in zip(spans, spans[1:]):
        assert start >= end, f"overlapping holders: {spans}"


def test_a_waiter_gives_up_naming_the_holder(api_client):
    with app_lock(api_client, "lock-busy", "run-first"):
        with pytest.raises(LockTimeout, match="run-first"):
            with app_lock(api_client, "lock-busy", "run-second", wait_s=1):
                pass


def test_a_dead_holders_lease_expires(api_client):
    leases = kubernetes.client.CoordinationV1Api(api_client)
    with app_lock(api_client, "lock-stale", "setup"):
        pass
    lease = leases.read_namespaced_lease(lease_name("lock-stale"), LOCK_NAMESPACE)
    lease.spec.holder_identity = "crashed-run"
    lease.spec.renew_time = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    leases.replace_namespaced_lease(lease_name("lock-stale"), LOCK_NAMESPACE, lease)
    started = time.monotonic()
    with app_lock(api_client, "lock-stale", "next-run", wait_s=5):
        held = leases.read_namespaced_lease(lease_name("lock-stale"), LOCK_NAMESPACE)
        assert held.spec.holder_identity == "next-run"
    assert time.monotonic() - started < 3
