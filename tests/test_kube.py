"""Cluster access: every request counted by verb at the lowest level, retries only
on transient failures, bounded concurrency, and discovery that notices new CRDs."""

from __future__ import annotations

import pickle
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
import urllib3

from conftest import kubectl
from prefect_gitops.engine.cluster.kube import (FAIL_FAST_S, UNKNOWN_KIND_RECHECK_S, UNRESPONSIVE_READ_S, VERBS, WRITE_GUARD, ApiError, ClusterUnreachable, KubeClient, RequestCounter, RequestTimeout,
                         RetryPolicy, UnknownKind, is_retryable, request_verb, run_bounded)
from prefect_gitops.engine.cluster.kubeconfig import load_access
from prefect_gitops.tasks.retry import is_transient

HOST = "https://127.0.0.1:6443"


@pytest.fixture(scope="module")
def kube(local_cluster):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as client:
        yield client


# ---- pure parts ------------------------------------------------------------------

@pytest.mark.parametrize("method, path, query, verb", [
    ("GET", "/api/v1/namespaces/ns/configmaps/cm", None, "GET"),
    ("GET", "/api/v1/namespaces/ns/configmaps", None, "LIST"),
    ("GET", "/api/v1/configmaps", None, "LIST"),
    ("GET", "/api/v1/namespaces", None, "LIST"),
    ("GET", "/api/v1/namespaces/ns", None, "GET"),
    ("GET", "/api/v1/namespaces/ns/status", None, "GET"),
    ("GET", "/apis/apps/v1/namespaces/ns/deployments", None, "LIST"),
    ("GET", "/apis/apps/v1/namespaces/ns/deployments/web", None, "GET"),
    ("GET", "/apis/apps/v1/namespaces/ns/deployments/web/scale", None, "GET"),
    ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", None, "LIST"),
    ("GET", "/apis/apps/v1/namespaces/ns/deployments", [("watch", True)], "WATCH"),
    ("GET", "/apis", None, "GET"),
    ("GET", "/apis/apps/v1", None, "GET"),
    ("GET", "/api/v1", None, "GET"),
    ("GET", "/version", None, "GET"),
    ("GET", "/k8s/clusters/c-1/api/v1/namespaces/ns/pods", None, "LIST"),
    ("PATCH", "/api/v1/namespaces/ns/configmaps/cm", [("dryRun", "All")], "PATCH"),
    ("POST", "/api/v1/namespaces/ns/configmaps", None, "POST"),
    ("put", "/api/v1/namespaces/ns/configmaps/cm", None, "PUT"),
    ("DELETE", "/api/v1/namespaces/ns/configmaps/cm", None, "DELETE"),
])
def test_request_verb(method, path, query, verb):
    assert request_verb(method, HOST + path, query) == verb


def _api_exception(status: int, body: bytes = b"") -> ApiError:
    return ApiError.from_answer(status, "x", body)


@pytest.mark.parametrize("error, retryable", [
    (_api_exception(429), True),
    (_api_exception(500), True),
    (_api_exception(502), True),
    (_api_exception(503), True),
    (_api_exception(504), True),
    (_api_exception(500, b'{"kind":"Status","message":"failed to create typed patch object (x): .data.a: expected string"}'), False),
    (_api_exception(400), False),
    (_api_exception(401), False),
    (_api_exception(403), False),
    (_api_exception(404), False),
    (_api_exception(409), False),
    (_api_exception(422), False),
    (urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError()), True),
    (urllib3.exceptions.MaxRetryError(None, "/api", reason=urllib3.exceptions.ProtocolError("x")), True),
    (urllib3.exceptions.MaxRetryError(None, "/api", reason=urllib3.exceptions.SSLError("bad cert")), False),
    (ConnectionResetError(), True),
    (ConnectionRefusedError(), True),
    (ValueError("bad"), False),
])
def test_only_transient_failures_are_retried(error, retryable):
    assert is_retryable(error) is retryable


def test_backoff_doubles_up_to_its_cap():
    policy = RetryPolicy(attempts=6, first_delay=0.2, max_delay=1.6)
    assert [policy.delay(i) for i in range(5)] == [0.2, 0.4, 0.8, 1.6, 1.6]


def test_counter_is_thread_safe_and_resets():
    counter = RequestCounter()
    run_bounded(lambda i: counter.count("PATCH", dry_run=i % 2 == 0), range(1000), max_workers=8)
    assert counter.snapshot() == {**{v: 0 for v in VERBS}, "PATCH": 1000}
    assert counter.writes() == {"POST": 0, "PATCH": 500, "PUT": 0, "DELETE": 0}
    assert counter.reset()["PATCH"] == 1000
    assert counter.snapshot() == {v: 0 for v in VERBS}


class PeakConcurrency:
    """A piece of work that remembers how many of its calls ran at once, at most."""

    def __init__(self):
        self.active = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, i: int) -> int:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.01)
        with self._lock:
            self.active -= 1
        return -i


def test_run_bounded_keeps_order_and_bound():
    work = PeakConcurrency()
    assert run_bounded(work, range(40), max_workers=4) == [-i for i in range(40)]
    assert 1 < work.peak <= 4


def test_a_clients_map_keeps_to_the_smaller_bound():
    work = PeakConcurrency()
    with _client_of("http://127.0.0.1:9", max_workers=6) as kube:
        assert kube.map(work, range(30), max_workers=3) == [-i for i in range(30)]
        assert 1 < work.peak <= 3
        wider = PeakConcurrency()
        assert kube.map(wider, range(30), max_workers=50) == [-i for i in range(30)]
        assert 1 < wider.peak <= 6


def _client_of(url: str, **kwargs) -> KubeClient:
    kubeconfig = {"clusters": [{"name": "c", "cluster": {"server": url}}], "users": [{"name": "u", "user": {}}],
                  "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "current-context": "c"}
    return KubeClient(load_access(kubeconfig), **kwargs)


def test_a_dropped_connection_is_retried_with_backoff():
    """A real refused connection (nothing listens on the port): every attempt is
    sent and counted, with the backoff between them, then the failure is one line
    naming the cluster and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kube = _client_of(f"http://127.0.0.1:{port}", name="production",
                      retry=RetryPolicy(attempts=3, first_delay=0.05, max_delay=0.1))
    started = time.monotonic()
    with kube, pytest.raises(ClusterUnreachable) as unreachable:
        kube.server_version()
    assert kube.requests["GET"] == 3
    assert time.monotonic() - started >= 0.15
    assert str(unreachable.value) == f"cluster production (http://127.0.0.1:{port}) is unreachable: connection refused"
    assert unreachable.value.transient and is_retryable(unreachable.value)


def test_a_server_that_never_answers_fails_at_the_time_limit_without_retries():
    """A socket that listens but never answers (as a paused kube-apiserver: the
    kernel accepts the connection): the request ends at the read limit, once."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with _client_of(url, timeout=RequestTimeout(connect_s=1, read_s=0.3)) as kube:
            with pytest.raises(ClusterUnreachable) as unreachable:
                kube.server_version()
            assert kube.requests["GET"] == 1
            with pytest.raises(ClusterUnreachable) as at_once:  # right after a timeout: not even sent
                kube.server_version()
            assert kube.requests["GET"] == 1
    assert str(unreachable.value) == (f"the cluster at {url} is unreachable: "
                                      "no answer within the time limit (connect 1 s, read 0.3 s)")
    assert str(at_once.value) == str(unreachable.value)
    assert unreachable.value.transient and at_once.value.transient


@pytest.mark.parametrize("error, words, retried", [
    (urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")),
     "connection lost: Connection reset by peer", True),
    (urllib3.exceptions.MaxRetryError(None, "/api", reason=urllib3.exceptions.SSLError("certificate verify failed")),
     "TLS failed: certificate verify failed", False),
    # A timeout already waited its limit: retrying it would stretch the bound of a sync.
    (urllib3.exceptions.ConnectTimeoutError(None, "timed out"),
     "no answer within the time limit (connect 5 s, read 30 s)", False),
])
def test_failures_to_reach_a_cluster_in_plain_words(error, words, retried):
    unreachable = ClusterUnreachable.from_error("staging", HOST, error, RequestTimeout())
    assert str(unreachable) == f"cluster staging ({HOST}) is unreachable: {words}"
    assert is_transient(unreachable) is retried  # a stage failing with it is retried by Prefect, or not
    copy = pickle.loads(pickle.dumps(unreachable))  # a task's failed state keeps it
    assert (str(copy), copy.transient, copy.unresponsive) == (str(unreachable), unreachable.transient,
                                                              unreachable.unresponsive)


def test_an_answer_of_the_server_is_not_called_unreachable():
    assert ClusterUnreachable.from_error("staging", HOST, _api_exception(500), RequestTimeout()) is None
    assert ClusterUnreachable.from_error("staging", HOST, ValueError("bug"), RequestTimeout()) is None


# ---- against the cluster -------------------------------------------------------------

needs_cluster = pytest.mark.cluster


def configmap(name: str, namespace: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}


@needs_cluster
def test_every_verb_is_counted_at_the_lowest_level(kube, namespace):
    kube.resource("v1", "ConfigMap")  # discovery done: its GETs are counted too, but not here
    kube.reset_requests()
    kube.create(configmap("a", namespace, x="1"))
    kube.apply(configmap("b", namespace, x="1"), dry_run=True)
    kube.apply(configmap("b", namespace, x="1"))
    kube.get("v1", "ConfigMap", "b", namespace)
    assert len(kube.list("v1", "ConfigMap", namespace)) >= 2
    kube.update(configmap("a", namespace, x="2"))
    assert kube.delete("v1", "ConfigMap", "a", namespace) is True
    kube.server_version()  # not a verb: the same client, counted too
    assert kube.requests == {"GET": 2, "LIST": 1, "WATCH": 0, "POST": 1, "PATCH": 2, "PUT": 1, "DELETE": 1}
    assert kube.writes == {"POST": 1, "PATCH": 1, "PUT": 1, "DELETE": 1}


@needs_cluster
def test_an_update_with_a_stale_resource_version_is_refused(kube, namespace):
    created = kube.create(configmap("cas", namespace, x="1"))
    version = created["metadata"]["resourceVersion"]
    kube.update({**configmap("cas", namespace, x="2"), "metadata": {**created["metadata"]}})
    with pytest.raises(ApiError) as refused:  # the object changed since `version`: not overwritten
        kube.update({**configmap("cas", namespace, x="3"),
                     "metadata": {"name": "cas", "namespace": namespace, "resourceVersion": version}})
    assert refused.value.code == 409
    assert kube.get("v1", "ConfigMap", "cas", namespace)["data"] == {"x": "2"}
    with pytest.raises(ApiError) as exists:
        kube.create(configmap("cas", namespace, x="4"))
    assert exists.value.code == 409


@needs_cluster
def test_the_server_version(kube):
    assert kube.server_version().startswith("v1.37.")


@needs_cluster
def test_client_errors_are_not_retried(kube, namespace):
    kube.resource("v1", "ConfigMap")
    kube.reset_requests()
    assert kube.get("v1", "ConfigMap", "missing", namespace) is None  # 404: once
    assert kube.delete("v1", "ConfigMap", "missing", namespace) is False
    with pytest.raises(ApiError) as refused:  # 422: once
        kube.apply(configmap("Bad_Name", namespace))
    assert refused.value.code == 422
    assert kube.requests == {"GET": 1, "LIST": 0, "WATCH": 0, "POST": 0, "PATCH": 1, "PUT": 0, "DELETE": 1}


@needs_cluster
def test_discovery_notices_a_crd_installed_mid_run(kube, local_cluster):
    group = f"g{secrets.token_hex(4)}.kube.test"
    with pytest.raises(UnknownKind):
        kube.resource(f"{group}/v1", "Gizmo")
    crd = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: gizmos.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: gizmos, singular: gizmo, kind: Gizmo}}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
"""
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=crd)
    try:
        kubectl(local_cluster.kubeconfig, "wait", "--for=condition=Established", f"crd/gizmos.{group}")
        time.sleep(UNKNOWN_KIND_RECHECK_S)  # a kind found missing is looked for again after this
        resource = kube.resource(f"{group}/v1", "Gizmo")  # re-discovered: no invalidate needed
        assert resource.namespaced and resource.name == "gizmos"
        assert kube.serves("apps/v1", "Deployment")
        kube.invalidate_discovery()
        assert kube.resource(f"{group}/v1", "Gizmo").name == "gizmos"
    finally:
        kubectl(local_cluster.kubeconfig, "delete", "crd", f"gizmos.{group}", "--wait=false", check=False)


@needs_cluster
def test_api_errors_carry_the_status_and_never_the_body(kube, namespace):
    with pytest.raises(ApiError) as refused:
        kube.apply({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "s", "namespace": "no-such-namespace-here"},
                    "stringData": {"password": "canary-kube-9f3a"}}, dry_run=True)
    assert refused.value.missing_namespace() == "no-such-namespace-here"
    assert "canary-kube-9f3a" not in str(refused.value) + repr(refused.value.status)


def test_after_a_timeout_requests_wait_the_short_limit_until_the_server_answers():
    with socket.socket() as silent:  # takes connections, never answers: a paused server
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with _client_of(f"http://127.0.0.1:{silent.getsockname()[1]}",
                        timeout=RequestTimeout(connect_s=1, read_s=7)) as kube:
            with pytest.raises(ClusterUnreachable, match=r"\(connect 1 s, read 7 s\)$") as first:
                kube.server_version()
            assert first.value.unresponsive and not is_transient(first.value)
            time.sleep(FAIL_FAST_S)
            with pytest.raises(ClusterUnreachable, match=rf"\(connect 1 s, read {UNRESPONSIVE_READ_S:g} s\)$"):
                kube.server_version()


@pytest.mark.cluster
def test_a_write_guard_refuses_writes_before_they_are_sent_and_lets_reads_and_dry_runs_through(local_cluster,
                                                                                                  namespace):
    class Fenced(Exception):
        pass

    def guard() -> None:
        raise Fenced("the Lease may be lost")

    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fenced", "namespace": namespace}}
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as kube:
        token = WRITE_GUARD.set(guard)
        try:
            with pytest.raises(Fenced):
                kube.create(body)
            with pytest.raises(Fenced):  # the guard goes along into the client's threads
                kube.map(lambda _: kube.apply(body), [1, 2])
            assert not any(kube.writes.values())
            kube.map(lambda _: kube.apply(body, dry_run=True), [1, 2])  # writes nothing: allowed
        finally:
            WRITE_GUARD.reset(token)
        assert kube.get("v1", "ConfigMap", "fenced", namespace) is None
        kube.create(body)  # outside the guarded context
        assert kube.get("v1", "ConfigMap", "fenced", namespace) is not None


def test_the_flows_and_the_command_line_do_not_import_the_kubernetes_package():
    """Importing it costs every command 0.3 s: requests go over urllib3 (engine/cluster/kube.py)."""
    code = ("import sys, prefect_gitops.cli.main, prefect_gitops.flows.sync, prefect_gitops.flows.drift, "
            "prefect_gitops.flows.recovery, prefect_gitops.flows.validate, prefect_gitops.flows.rollback; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@needs_cluster
def test_new_connections_reuse_the_clients_tls_context(local_cluster, monkeypatch):
    """The CA is loaded once, into the client's context, not again per connection
    (as urllib3 does when given a CA file: 5 ms of CPU each)."""
    loads = []
    load = ssl.SSLContext.load_verify_locations
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", lambda *a, **k: (loads.append(1), load(*a, **k))[1])
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig, max_workers=8) as kube:
        assert len(loads) == 1
        versions = kube.map(lambda _: kube.server_version(), range(32))  # on up to 8 connections at once
        assert len(set(versions)) == 1 and versions[0].startswith("v1.")
    assert len(loads) == 1
