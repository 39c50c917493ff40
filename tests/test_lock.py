"""The per-app Lease: two holders never overlap, a waiter says who holds it and
gives up clearly, a holder that died does not block the app for longer than the
lease (not at all when it died on this host), a failed renewal is logged, never
an unhandled exception in the renewal thread, and a holder that cannot renew
stops writing before anyone else may take the Lease."""

from __future__ import annotations

import datetime
import logging
import subprocess
import threading
import time

import pytest

from prefect_gitops.engine.cluster.kube import NO_RETRY, KubeClient
from prefect_gitops.engine.state import lock
from prefect_gitops.engine.state.lock import (LEASE_API_VERSION, LOCK_NAMESPACE, LeaseLost, LockTimeout, app_lock, holder_identity,
                         lease_name)
from tcp_proxy import proxied_kubeconfig

pytestmark = pytest.mark.cluster


@pytest.fixture
def kube(local_cluster):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as client:
        yield client


def lease(kube: KubeClient, app: str) -> dict:
    return kube.get(LEASE_API_VERSION, "Lease", lease_name(app), LOCK_NAMESPACE)


def expires(held: dict) -> datetime.datetime:
    """When a Lease runs out unless renewed: from then on another run may take it."""
    renewed = datetime.datetime.fromisoformat(held["spec"]["renewTime"].replace("Z", "+00:00"))
    return renewed + datetime.timedelta(seconds=held["spec"]["leaseDurationSeconds"])


def test_two_holders_never_overlap(kube, request):
    app = f"lock-{request.node.name[-8:].lower().replace('_', '-')}"
    spans: list[tuple[str, float, float]] = []

    def hold(holder: str) -> None:
        with app_lock(kube, app, holder, wait_s=30):
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


def test_a_waiter_says_who_holds_the_lease_until_when_and_gives_up_naming_the_holder(kube, caplog):
    with app_lock(kube, "lock-busy", "run-first"):
        assert lease(kube, "lock-busy")["spec"]["holderIdentity"] == "run-first"
        with caplog.at_level(logging.WARNING, "prefect_gitops.engine.state.lock"), pytest.raises(LockTimeout, match="run-first"):
            with app_lock(kube, "lock-busy", "run-second", wait_s=1):
                pass
    [waiting] = [r.getMessage() for r in caplog.records if "waiting up to 1 s" in r.getMessage()]
    assert "app lock-busy is being synced by run-first" in waiting
    assert f"{LOCK_NAMESPACE}/{lease_name('lock-busy')} runs until " in waiting
    assert "holderIdentity" not in lease(kube, "lock-busy")["spec"]  # released


def test_a_dead_holders_lease_expires(kube):
    with app_lock(kube, "lock-stale", "setup"):
        pass
    stale = lease(kube, "lock-stale")
    stale["spec"]["holderIdentity"] = "crashed-run"
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    stale["spec"]["renewTime"] = long_ago.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube.update(stale)
    # wait_s=5 is far less than the Lease's 60 s: only an expired Lease can be taken.
    with app_lock(kube, "lock-stale", "next-run", wait_s=5):
        assert lease(kube, "lock-stale")["spec"]["holderIdentity"] == "next-run"


def test_the_lease_of_a_killed_holder_on_this_host_is_taken_at_once(kube):
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = holder_identity("killed-run").replace(f"/{__import__('os').getpid()}", f"/{gone.pid}")
    with app_lock(kube, "lock-killed", killed):
        pass
    stale = lease(kube, "lock-killed")
    stale["spec"]["holderIdentity"] = killed  # held, freshly renewed, by a process that is gone
    kube.update(stale)
    with app_lock(kube, "lock-killed", holder_identity("next-run"), wait_s=2):
        assert lease(kube, "lock-killed")["spec"]["holderIdentity"] == holder_identity("next-run")


def test_a_live_holders_lease_is_renewed(kube, monkeypatch):
    monkeypatch.setattr(lock, "RENEW_EVERY_S", 0.2)
    with app_lock(kube, "lock-renewed", "run-long"):
        first = lease(kube, "lock-renewed")["spec"]["renewTime"]
        while lease(kube, "lock-renewed")["spec"]["renewTime"] == first:
            time.sleep(0.1)
        assert lease(kube, "lock-renewed")["spec"]["holderIdentity"] == "run-long"


def test_a_failed_renewal_is_logged_not_raised(local_cluster, monkeypatch, caplog, tmp_path):
    """The API server unreachable while the lock is held (a real TCP proxy in
    between, closed): the renewal thread logs each failure and keeps going."""
    monkeypatch.setattr(lock, "RENEW_EVERY_S", 0.2)
    unhandled: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", unhandled.append)
    proxy, proxied = proxied_kubeconfig(local_cluster.kubeconfig, tmp_path / "kubeconfig")

    def renewal_failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "renewing the Lease" in r.getMessage()]

    try:
        with KubeClient.from_kubeconfig(proxied, retry=NO_RETRY) as kube, caplog.at_level(logging.WARNING, "prefect_gitops.engine.state.lock"):
            with app_lock(kube, "lock-unreachable", "run-cut-off"):
                proxy._shut_all()  # connections reset, new ones refused
                while not (renewal_failures() or unhandled):
                    time.sleep(0.1)
                proxy.start()
            assert "holderIdentity" not in lease(kube, "lock-unreachable")["spec"]  # released once reachable
    finally:
        proxy.stop()
    assert unhandled == []
    assert f"{LOCK_NAMESPACE}/{lease_name('lock-unreachable')}" in renewal_failures()[0].getMessage()


def test_a_holder_that_cannot_renew_stops_writing_before_another_may_take_the_lease(local_cluster, kube, monkeypatch,
                                                                                     tmp_path):
    """The holder reaches the server through a real TCP proxy, which is cut: the
    cut-off holder's writes are refused (LeaseLost, nothing sent: a write sent
    would fail with the proxy's refusal) from 1 s after its last renewal, while its
    Lease (5 s here) has not run out; then another run takes it, and the writes
    stay refused once the server is reachable again, for the Lease is no longer
    its own."""
    monkeypatch.setattr(lock, "LEASE_DURATION_S", 5)
    monkeypatch.setattr(lock, "WRITE_WINDOW_S", 1)
    monkeypatch.setattr(lock, "RENEW_EVERY_S", 0.2)
    proxy, proxied = proxied_kubeconfig(local_cluster.kubeconfig, tmp_path / "kubeconfig")
    note = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fenced-write", "namespace": "default"}}
    taken, done = threading.Event(), threading.Event()

    def next_run() -> None:  # another run, in a thread of its own (a context of its own)
        with app_lock(kube, "lock-fenced", "run-next", wait_s=30):
            taken.set()
            done.wait(30)

    taker = threading.Thread(target=next_run)
    try:
        with KubeClient.from_kubeconfig(proxied, retry=NO_RETRY) as cut_off:
            with app_lock(cut_off, "lock-fenced", "run-cut-off"):
                cut_off.apply(note)  # while the Lease is fresh
                proxy._shut_all()
                time.sleep(lock.WRITE_WINDOW_S + 2 * lock.RENEW_EVERY_S)  # past the window of the last renewal
                with pytest.raises(LeaseLost, match=r"lock-fenced was last renewed \d+ s ago"):
                    cut_off.apply({**note, "data": {"early": "write"}})
                # Refused before anyone else may take the Lease: it has not run out yet.
                assert datetime.datetime.now(datetime.timezone.utc) < expires(lease(kube, "lock-fenced"))
                taker.start()
                assert taken.wait(30)  # once the Lease ran out
                proxy.start()
                with pytest.raises(LeaseLost, match=r"lock-fenced was last renewed \d+ s ago"):
                    cut_off.apply({**note, "data": {"late": "write"}})
                time.sleep(0.5)  # renewals reach the server again, and find the Lease taken
                with pytest.raises(LeaseLost):
                    cut_off.delete("v1", "ConfigMap", "fenced-write", "default")
                assert lease(kube, "lock-fenced")["spec"]["holderIdentity"] == "run-next"
    finally:
        done.set()
        if taker.ident is not None:  # started
            taker.join()
        proxy.stop()
    assert "data" not in kube.get("v1", "ConfigMap", "fenced-write", "default")
    kube.delete("v1", "ConfigMap", "fenced-write", "default")


def test_a_run_that_waited_for_the_lease_may_write_once_it_holds_it(kube, monkeypatch):
    """The write window starts when the Lease is taken, not when the wait began:
    the second run waits longer than the window, then its write lands."""
    monkeypatch.setattr(lock, "WRITE_WINDOW_S", 1)
    note = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-waiting", "namespace": "default"},
            "data": {"written": "by the run that waited"}}
    kube.delete("v1", "ConfigMap", "after-waiting", "default")  # none left by an earlier run

    def first_run() -> None:
        with app_lock(kube, "lock-waited", "run-first"):
            time.sleep(3 * lock.WRITE_WINDOW_S)  # the second run waits longer than the write window

    first = threading.Thread(target=first_run)
    first.start()
    while first.is_alive() and (lease(kube, "lock-waited") or {}).get("spec", {}).get("holderIdentity") != "run-first":
        time.sleep(0.05)
    try:
        asked = time.monotonic()
        with app_lock(kube, "lock-waited", "run-second", wait_s=30):
            waited = time.monotonic() - asked
            kube.apply(note)  # within the window of the Lease just taken
        written = kube.get("v1", "ConfigMap", "after-waiting", "default")
    finally:
        first.join()
        kube.delete("v1", "ConfigMap", "after-waiting", "default")
    assert waited > lock.WRITE_WINDOW_S
    assert written is not None and written.get("data") == note["data"]
