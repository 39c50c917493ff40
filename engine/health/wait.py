"""Waiting for health: wait_for_health() reads the objects through a KubeClient
until every one is Current (engine/health/rules.py judges each), one is Failed
(fail fast: a pod that cannot pull its image fails the wait at once) or the time
is up."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from prefect_gitops.engine.health.rules import (POD_OWNERS, Health, HealthStatus, _in_progress, _section, _spec_observed,
                                 compute_health, label_selector, workload_pod_failure)
from prefect_gitops.engine.cluster.kube import ApiError, KubeClient, UnknownKind, is_retryable
from prefect_gitops.engine.objects import ObjectKey, group_of


class ObjectRef(NamedTuple):
    api_version: str
    kind: str
    namespace: str | None
    name: str

    @property
    def key(self) -> ObjectKey:
        return ObjectKey.of(self.api_version, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        return self.key.ref


def refs_of(objects: Iterable[Any]) -> list[ObjectRef]:
    """The refs of anything naming api_version, kind, namespace and name (e.g. the
    desired objects of a ChangeSet)."""
    return [ObjectRef(o.api_version, o.kind, o.namespace or None, o.name) for o in objects]


@dataclass(frozen=True)
class ObjectHealth:
    ref: ObjectRef
    health: Health

    def __str__(self) -> str:
        return f"{self.ref}: {self.health}"


@dataclass(frozen=True)
class HealthReport:
    """The last look at every object: all Current (ok), some Failed, or timed out."""

    results: list[ObjectHealth]
    timed_out: bool = False
    elapsed_s: float = 0.0
    timeout_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(r.health.status is HealthStatus.CURRENT for r in self.results)

    @property
    def failed(self) -> list[ObjectHealth]:
        return [r for r in self.results if r.health.status is HealthStatus.FAILED]

    @property
    def pending(self) -> list[ObjectHealth]:
        """Neither Current nor Failed: what a timeout was waiting for."""
        return [r for r in self.results if r.health.status not in (HealthStatus.CURRENT, HealthStatus.FAILED)]

    def summary(self) -> str:
        if self.failed:
            return "; ".join(f"{r.ref}: Failed: {r.health.reason}: {r.health.message}" for r in self.failed)
        if self.ok:
            return f"{len(self.results)} objects Current after {self.elapsed_s:.1f} s"
        waiting = "; ".join(f"{r.ref} {r.health.status.value} ({r.health.message or r.health.reason})"
                            for r in self.pending)
        return f"timed out after {self.timeout_s:g} s: {waiting}"


def wait_for_health(
    kube: KubeClient,
    refs: Iterable[ObjectRef | tuple[str, str, str | None, str]],
    timeout_s: float,
    poll_interval_s: float = 1.0,
    on_poll: Callable[[list[ObjectHealth], float], None] | None = None,
    seen: Mapping[ObjectRef, dict] | None = None,
) -> HealthReport:
    """Poll the objects named by `refs` ((api_version, kind, namespace, name)) until
    all are Current, one is Failed, or `timeout_s` has passed. NotFound and
    Terminating objects are waited for like InProgress ones (right after an apply a
    cache may lag). `on_poll(results, elapsed_s)` is called after every look that
    does not end the wait. `seen`: objects as the caller read them moments ago (the
    unchanged objects of a sync's diff); those Current then are not read again."""
    refs = [ObjectRef(*r) for r in refs]
    reader = _ClusterReader(kube)
    start = time.monotonic()
    current = _current_as_seen(refs, seen or {})
    to_read = [ref for ref in refs if ref not in current]
    while True:
        looked = dict(zip(to_read, reader.look(to_read)))
        results = [current.get(ref) or looked[ref] for ref in refs]
        elapsed = time.monotonic() - start
        report = HealthReport(results, elapsed_s=elapsed, timeout_s=timeout_s)
        if report.ok or report.failed:
            return report
        remaining = timeout_s - elapsed
        if remaining <= 0:
            return HealthReport(results, timed_out=True, elapsed_s=elapsed, timeout_s=timeout_s)
        if on_poll is not None:
            on_poll(results, elapsed)
        time.sleep(min(poll_interval_s, remaining))


def _current_as_seen(refs: list[ObjectRef], seen: Mapping[ObjectRef, dict]) -> dict[ObjectRef, ObjectHealth]:
    now = datetime.now(timezone.utc)
    healths = {ref: ObjectHealth(ref, compute_health(seen[ref], now)) for ref in refs if ref in seen}
    return {ref: h for ref, h in healths.items() if h.health.status is HealthStatus.CURRENT}


# What a read gave: the object, None when it does not exist, or a Health saying why
# it could not be read (the kind is not served, the API refused or was unreachable).
Read = dict | None | Health


@dataclass
class _ClusterReader:
    """Reads objects for the waiter with as few requests as it can: a GET for a
    lone object, one LIST per kind and namespace otherwise, and the pods (and a
    Deployment's ReplicaSets) of workloads that are InProgress (_PodLister)."""

    kube: KubeClient

    def look(self, refs: Sequence[ObjectRef]) -> list[ObjectHealth]:
        now = datetime.now(timezone.utc)
        objects: dict[ObjectRef, Read] = {}
        groups: dict[tuple[str, str, str], list[ObjectRef]] = {}
        for ref in refs:
            try:  # a kind not served is asked again next look: its CRD may be established by then
                namespaced = self.kube.namespaced(ref.api_version, ref.kind)
            except UnknownKind:
                objects[ref] = _not_served(ref.api_version, ref.kind)
                continue
            namespace = (ref.namespace or "default") if namespaced else ""
            groups.setdefault((ref.api_version, ref.kind, namespace), []).append(ref)
        for (api_version, kind, namespace), members in groups.items():
            objects.update(self._read(api_version, kind, namespace, members))
        healths = {ref: obj if isinstance(obj, Health) else compute_health(obj, now)
                   for ref, obj in objects.items()}
        suspects = {ref for ref in refs if _may_have_failing_pods(objects[ref], healths[ref], ref.api_version)}
        pods = _PodLister(self.kube, [objects[ref] for ref in suspects])
        return [ObjectHealth(ref, (pods.failure(objects[ref]) if ref in suspects else None) or healths[ref])
                for ref in refs]

    def _read(self, api_version: str, kind: str, namespace: str, refs: list[ObjectRef]) -> dict[ObjectRef, Read]:
        if len(refs) == 1:
            ref = refs[0]
            return {ref: _request(lambda: self.kube.get(api_version, kind, ref.name, namespace))}
        listed = _request(lambda: _list(self.kube, api_version, kind, namespace))
        if not isinstance(listed, list):
            return {ref: listed for ref in refs}
        by_name = {_section(item, "metadata").get("name"): item for item in listed}
        return {ref: by_name.get(ref.name) for ref in refs}


def _may_have_failing_pods(obj: Read, health: Health, api_version: str) -> bool:
    """An InProgress workload whose controller has seen its spec: only then are its
    current pods known (workload_pod_failure), so only then are they listed."""
    if not isinstance(obj, dict) or health.status is not HealthStatus.IN_PROGRESS:
        return False
    if (group_of(api_version), obj.get("kind")) not in POD_OWNERS:
        return False
    return _spec_observed(obj)


class _PodLister:
    """The pods (and ReplicaSets) of InProgress workloads, listed once a look: by
    the workload's selector when it is alone in its namespace, else the namespace's
    whole list once (250 Deployments rolling out in a namespace are 2 LISTs a look,
    not 500; workload_pod_failure keeps only the pods a workload owns)."""

    def __init__(self, kube: KubeClient, workloads: list[dict]):
        self.kube = kube
        self.lists: dict[tuple[str, str, str | None], list[dict]] = {}
        per_namespace = Counter(_section(workload, "metadata").get("namespace") for workload in workloads)
        self.crowded = {namespace for namespace, count in per_namespace.items() if count > 1}

    def failure(self, workload: dict) -> Health | None:
        namespace = _section(workload, "metadata").get("namespace")
        selector = label_selector(_section(workload, "spec").get("selector"))
        if not namespace or not selector:
            return None
        if namespace in self.crowded:
            selector = None
        pods = self._list("v1", "Pod", namespace, selector)
        replica_sets = self._list("apps/v1", "ReplicaSet", namespace, selector) \
            if workload.get("kind") == "Deployment" else []
        return workload_pod_failure(workload, pods, replica_sets)

    def _list(self, api_version: str, kind: str, namespace: str, selector: str | None) -> list[dict]:
        key = (kind, namespace, selector)
        if key not in self.lists:
            listed = _request(lambda: _list(self.kube, api_version, kind, namespace, selector))
            self.lists[key] = listed if isinstance(listed, list) else []
        return self.lists[key]


def _list(kube: KubeClient, api_version: str, kind: str, namespace: str, selector: str | None = None) -> list[dict]:
    return kube.list(api_version, kind, namespace, label_selector=selector)


def _not_served(api_version: str, kind: str) -> Health:
    return _in_progress("KindNotServed", f"the cluster does not serve {api_version} {kind}")


def _request(call: Callable[[], Any]) -> Any:
    """What `call` returned, or a Health saying why the object could not be read.
    An unreachable or failing server (connection refused or reset, 429, 5xx, after
    KubeClient's own quick retries) ends the wait at once with the error: polling a
    dead server until the health timeout tells nobody anything, and the caller's
    retries (Prefect's) decide whether to wait again."""
    try:
        return call()
    except UnknownKind as error:
        return _not_served(error.api_version, error.kind)
    except ApiError as error:
        if is_retryable(error):
            raise
        return Health(HealthStatus.UNKNOWN, "ApiError", f"{error.code} {error.reason}" if error.reason else error.message)
