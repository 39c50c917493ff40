"""Waiting for health: wait_for_health() follows the objects (engine/cluster/watch.py:
one LIST per kind and namespace, then a watch of it) until every one is Current
(engine/health/rules.py judges each), one is Failed (fail fast: a pod that cannot
pull its image fails the wait at once) or the time is up. Only what changed is
judged again, so a wait on 10,000 objects costs little while they do not change;
the pods and ReplicaSets of a namespace are followed only while a workload there
is in progress."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Collection, Iterable, Mapping, NamedTuple

from prefect_gitops.engine.cluster.kube import ApiError, KubeClient, UnknownKind
from prefect_gitops.engine.cluster.watch import Follower, OnChange, Scope
from prefect_gitops.engine.health.rules import (POD_OWNERS, Health, HealthStatus, _in_progress, _section, _spec_observed,
                                                compute_health, label_selector, pod_container_failure,
                                                workload_pod_failure)
from prefect_gitops.engine.objects import ObjectKey, group_of

# Judged again from what is known, without a request, this often: a few rules
# depend on the time (a pod unschedulable for 15 s).
REJUDGE_EVERY_S = 5.0
# Changes that arrive together are judged together, at most this often.
JUDGE_EVERY_S = 0.1
SEEN_CURRENT = Health(HealthStatus.CURRENT, "", "as seen moments before the wait")


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
    cpu_s: float | None = None  # the process's CPU during the wait (all its threads): what waiting cost us

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
            cost = f" ({self.cpu_s:.2f} s of CPU)" if self.cpu_s is not None else ""
            return f"{len(self.results)} objects Current after {self.elapsed_s:.1f} s{cost}"
        waiting = "; ".join(f"{r.ref} {r.health.status.value} ({r.health.message or r.health.reason})"
                            for r in self.pending)
        return f"timed out after {self.timeout_s:g} s: {waiting}"


def wait_for_health(
    kube: KubeClient,
    refs: Iterable[ObjectRef | tuple[str, str, str | None, str]],
    timeout_s: float,
    on_progress: Callable[[list[ObjectHealth], int, float], None] | None = None,
    seen_current: Collection[ObjectRef] = (),
    progress_every_s: float = 1.0,
    custom: Callable[[dict], Health | None] | None = None,
) -> HealthReport:
    """Follow the objects named by `refs` ((api_version, kind, namespace, name))
    until all are Current, one is Failed, or `timeout_s` has passed; with
    timeout_s=0, one look. NotFound and Terminating objects are waited for like
    InProgress ones (right after an apply a cache may lag). `on_progress(waiting,
    of, elapsed_s)` (what is not Current yet, by ref, of how many) is called at
    most every `progress_every_s` while the wait goes on.
    `seen_current`: objects the caller saw Current moments ago (in the apply's
    answer, or the diff's of an unchanged one: current_as_seen()); not read again.
    `custom`: the app's CEL rules (engine/health/cel_rules.py). Raises what a follower
    gave up on (engine/cluster/watch.py): a cluster out of reach for longer than an
    API server restart, or one that stopped answering."""
    refs = [ObjectRef(*r) for r in refs]
    start, cpu_start = time.monotonic(), time.process_time()
    current = set(seen_current)

    def report(timed_out: bool = False) -> HealthReport:
        results = [ObjectHealth(ref, SEEN_CURRENT) if ref in current else watch.healths[ref] for ref in refs]
        return HealthReport(results, timed_out, time.monotonic() - start, timeout_s, time.process_time() - cpu_start)

    with _Watch(kube, [ref for ref in refs if ref not in current], follow=timeout_s > 0, custom=custom) as watch:
        watch.first_look()
        reported = 0.0
        while not watch.failed and watch.pending:
            elapsed = time.monotonic() - start
            if elapsed >= timeout_s:
                return report(timed_out=True)
            if on_progress is not None and elapsed - reported >= progress_every_s:
                on_progress(sorted((watch.healths[ref] for ref in watch.pending), key=str), len(refs), elapsed)
                reported = elapsed
            watch.wait_for_change(min(timeout_s - elapsed, REJUDGE_EVERY_S))
            watch.judge()
        return report()


def current_as_seen(seen: Mapping[ObjectRef, dict],
                    custom: Callable[[dict], Health | None] | None = None) -> set[ObjectRef]:
    """The refs of the objects that were Current as the caller read them."""
    now = datetime.now(timezone.utc)
    return {ref for ref, obj in seen.items() if compute_health(obj, now, custom).status is HealthStatus.CURRENT}


class _Watch:
    """The followers of one wait and what they say: one per kind and namespace of
    the refs (by name when a ref is alone there); in a namespace with workloads in
    progress, one of its pods that are failing; where there are such pods and a
    Deployment, one of its ReplicaSets (the newest says which pods are current).
    Followers tell of changes from their threads; judge() judges what changed."""

    def __init__(self, kube: KubeClient, refs: list[ObjectRef], follow: bool,
                 custom: Callable[[dict], Health | None] | None = None):
        self.kube, self.follow, self.custom = kube, follow, custom
        self.scopes = {ref: _scope_of(kube, ref) for ref in refs}
        self.refs_of: dict[Scope, list[ObjectRef]] = {}
        for ref, scope in self.scopes.items():
            self.refs_of.setdefault(scope, []).append(ref)
        self.followers: dict[Scope, Follower] = {}
        self.pods: dict[str, Follower] = {}  # by namespace: its failing pods
        self.replica_sets: dict[str, Follower] = {}  # by namespace
        self.suspects: dict[str, dict[ObjectRef, dict]] = {}  # by namespace: workloads in progress
        self.healths: dict[ObjectRef, ObjectHealth] = {}
        self.pending: set[ObjectRef] = set(refs)  # neither Current nor Failed
        self.failed: set[ObjectRef] = set()
        self._changed = threading.Condition()
        self._dirty: set[ObjectRef] = set(refs)
        self._judged_at = 0.0

    def __enter__(self) -> "_Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        for follower in self._all_followers():
            follower.stop()

    def first_look(self) -> None:
        """Every scope read once and judged; then the pods of the workloads found
        in progress, and the ReplicaSets where pods are failing."""
        for scope, members in self.refs_of.items():
            names = {ref.name for ref in members}
            lone = f"metadata.name={members[0].name}" if len(members) == 1 else None
            self.followers[scope] = self._follower(replace(scope, field_selector=lone), self._heard,
                                                   keep=lambda obj, names=names: obj["metadata"]["name"] in names)
        for _ in range(3):
            for follower in self._all_followers():
                follower.listed.wait()
            self.judge()

    def wait_for_change(self, timeout_s: float) -> None:
        """Until a follower heard of a change, or `timeout_s`; then everything
        pending is judged again (a few rules depend on the time)."""
        time.sleep(max(0.0, self._judged_at + JUDGE_EVERY_S - time.monotonic()))
        with self._changed:
            if not self._dirty and not self._changed.wait(timeout_s):
                self._dirty.update(self.pending)

    def judge(self) -> None:
        """Judge every ref that changed since the last judgement."""
        with self._changed:
            dirty, self._dirty = self._dirty, set()
        self._judged_at = time.monotonic()
        for follower in self._all_followers():
            if follower.error is not None:
                raise follower.error
        now = datetime.now(timezone.utc)
        for ref in dirty:
            health = self._health(ref, now)
            self.healths[ref] = ObjectHealth(ref, health)
            (self.pending.add if health.status not in (HealthStatus.CURRENT, HealthStatus.FAILED)
             else self.pending.discard)(ref)
            (self.failed.add if health.status is HealthStatus.FAILED else self.failed.discard)(ref)
        self._follow_pods()
        self._let_go_of_current({self.scopes[ref] for ref in dirty})

    def _health(self, ref: ObjectRef, now: datetime) -> Health:
        follower = self.followers[self.scopes[ref]]
        if follower.refusal is not None:
            return _refused(follower.refusal)
        obj = follower.get(ref.name)
        health = compute_health(obj, now, self.custom)
        namespace = self.scopes[ref].namespace
        if not _may_have_failing_pods(obj, health, ref.api_version):
            self.suspects.get(namespace, {}).pop(ref, None)
            return health
        self.suspects.setdefault(namespace, {})[ref] = obj
        pods = self.pods.get(namespace)
        if pods is None or not pods.count():  # no pod is failing there: no workload's can be
            return health
        replica_sets = self.replica_sets.get(namespace)
        return workload_pod_failure(obj, pods.objects(), replica_sets.objects() if replica_sets else []) or health

    def _follow_pods(self) -> None:
        """Pods followed where workloads are in progress, and only there (by the
        workload's selector when it is alone in its namespace); ReplicaSets where
        a pod is failing and a Deployment is in progress."""
        for namespace, workloads in self.suspects.items():
            selector = _shared_selector(list(workloads.values()))
            pods = self.pods.get(namespace)
            if pods is not None and (not workloads or pods.scope.label_selector not in (None, selector)):
                self._stop(namespace)
                pods = None
            if pods is None and workloads:
                self.pods[namespace] = self._follower(Scope("v1", "Pod", namespace, selector), self._heard_pods,
                                                      keep=_failing_pod)
            elif (pods is not None and pods.count() and namespace not in self.replica_sets
                  and any(w.get("kind") == "Deployment" for w in workloads.values())):
                self.replica_sets[namespace] = self._follower(
                    Scope("apps/v1", "ReplicaSet", namespace, pods.scope.label_selector), self._heard_pods)

    def _stop(self, namespace: str) -> None:
        for followers in (self.pods, self.replica_sets):
            if (follower := followers.pop(namespace, None)) is not None:
                follower.stop()

    def _let_go_of_current(self, scopes: set[Scope]) -> None:
        """A scope whose objects are all Current is not followed further."""
        for scope in scopes:
            if not any(ref in self.pending or ref in self.failed for ref in self.refs_of[scope]):
                self.followers[scope].stop()

    def _follower(self, scope: Scope, on_change: OnChange, **kwargs: Any) -> Follower:
        return Follower(self.kube, scope, on_change, follow=self.follow, **kwargs).start()

    def _all_followers(self) -> list[Follower]:
        return [*self.followers.values(), *self.pods.values(), *self.replica_sets.values()]

    def _heard(self, follower: Follower, names: set[str] | None) -> None:
        members = self.refs_of.get(replace(follower.scope, field_selector=None), [])
        self._mark([ref for ref in members if names is None or ref.name in names])

    def _heard_pods(self, follower: Follower, names: set[str] | None) -> None:
        self._mark(list(self.suspects.get(follower.scope.namespace, {})))

    def _mark(self, refs: list[ObjectRef]) -> None:
        if refs:
            with self._changed:
                self._dirty.update(refs)
                self._changed.notify()


def _scope_of(kube: KubeClient, ref: ObjectRef) -> Scope:
    """A ref's kind and namespace: "" for a cluster-scoped kind, "default" for a
    namespaced one without a namespace."""
    try:
        namespaced = kube.namespaced(ref.api_version, ref.kind)
    except UnknownKind:  # not served yet: its follower asks again
        return Scope(ref.api_version, ref.kind, ref.namespace or "")
    return Scope(ref.api_version, ref.kind, (ref.namespace or "default") if namespaced else "")


def _shared_selector(workloads: list[dict]) -> str | None:
    """The label selector of a lone workload; None (the whole namespace) for more."""
    if len(workloads) != 1:
        return None
    return label_selector(_section(workloads[0], "spec").get("selector"))


def _failing_pod(pod: dict) -> bool:
    """Only pods with a container in a failing wait can fail a workload."""
    return not _section(pod, "metadata").get("deletionTimestamp") and pod_container_failure(pod) is not None


def _may_have_failing_pods(obj: dict | None, health: Health, api_version: str) -> bool:
    """An InProgress workload whose controller has seen its spec: only then are its
    current pods known (workload_pod_failure), so only then are they followed."""
    if not isinstance(obj, dict) or health.status is not HealthStatus.IN_PROGRESS:
        return False
    if (group_of(api_version), obj.get("kind")) not in POD_OWNERS:
        return False
    return _spec_observed(obj)


def _refused(error: UnknownKind | ApiError) -> Health:
    """Why objects could not be read: their kind is not served (yet), or the API refused."""
    if isinstance(error, UnknownKind):
        return _in_progress("KindNotServed", f"the cluster does not serve {error.api_version} {error.kind}")
    return Health(HealthStatus.UNKNOWN, "ApiError", f"{error.code} {error.reason}" if error.reason else error.message)
