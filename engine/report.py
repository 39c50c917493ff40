"""What a sync, diff or drift run reports per app and cluster: the shape of
`gitops sync --json`, which scripts rely on, and its Prefect table artifact."""

from __future__ import annotations

import json
from collections import UserList
from dataclasses import asdict, dataclass, field, fields
from enum import Enum

from prefect_gitops.engine.objects import Identified

VERBS = ("GET", "LIST", "POST", "PATCH", "PUT", "DELETE")
CHANGING_ACTIONS = ("created", "configured", "pruned")


def error_line(error: BaseException) -> str:
    """An error as a result's message says it: an unreachable cluster or a lost
    Lease already say so in words; other errors are named by their type."""
    # Here, not at the top: the CLI imports this module at start-up, without the Kubernetes client.
    from prefect_gitops.engine.cluster.kube import ClusterUnreachable
    from prefect_gitops.engine.state.lock import LeaseLost

    if isinstance(error, (ClusterUnreachable, LeaseLost)):
        return str(error)
    return f"{type(error).__name__}: {error}"


class SyncStatus(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REVERTED = "reverted"
    SKIPPED = "skipped"


@dataclass
class ObjectResult(Identified):
    apiVersion: str
    kind: str
    namespace: str
    name: str
    source: str  # path:line in the repository; "" for pruned objects
    action: str  # created, configured, unchanged, pruned, skipped
    health: str  # the kstatus word, "" when not checked
    reason: str = ""
    # The field diff, `- path: old` / `+ path: new` a line, Secret values masked; "" when unchanged.
    diff: str = ""
    # For a change: done, failed, unknown (sent, never answered) or not attempted.
    outcome: str = ""

    @property
    def api_version(self) -> str:  # the field is named as the JSON document names it
        return self.apiVersion


class ObjectResults(UserList):
    """A result's objects: a list in all but type. At the end of every flow run
    Prefect walks what the flow returns, every list, dict and dataclass in it,
    looking for futures; it does not walk into this (1,000 objects: 0.07 s a sync)."""


@dataclass
class TargetResult:
    app: str
    cluster: str
    status: SyncStatus
    message: str
    objects: ObjectResults = field(default_factory=ObjectResults)
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERBS, 0))
    revision: str = ""  # the revision this result is about
    seconds: float = 0.0
    health: str = ""  # a summary of the health stage, "" when it did not run
    held: bool = False  # skipped because the revision is held after a failed sync
    suspended: bool = False  # skipped (a drift check: not healed) because the app is suspended

    def __post_init__(self) -> None:
        if not isinstance(self.objects, ObjectResults):
            self.objects = ObjectResults(self.objects)

    @property
    def changed(self) -> int:
        """Objects created, configured or pruned."""
        return sum(o.action in CHANGING_ACTIONS for o in self.objects)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(status=self.status.value, objects=[asdict(o) for o in self.objects], requests=dict(self.requests))
        return data


@dataclass
class SyncReport:
    revision: str
    results: list[TargetResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status in (SyncStatus.SUCCEEDED, SyncStatus.SKIPPED) for r in self.results)

    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if r.status in (SyncStatus.FAILED, SyncStatus.REVERTED)]

    def to_json(self) -> str:
        return json.dumps({"revision": self.revision, "results": [r.to_json() for r in self.results]}, indent=2)

    def failure_message(self) -> str:
        return "; ".join(f"{r.app} on {r.cluster}: {r.status.value}: {r.message}" for r in self.failed())


@dataclass
class DriftObjectResult(ObjectResult):
    """An object of a drift report, with what changed (`path: desired -> live`, Secret values masked)."""

    changes: list[str] = field(default_factory=list)


@dataclass
class DriftTargetResult(TargetResult):
    revision: str = ""  # the revision compared with: the one last synced here
    error: bool = field(default=False, repr=False)  # could not check or heal, rather than drifted

    def to_json(self) -> dict:
        data = super().to_json()
        for sync_only in ("error", "health", "held", "seconds"):
            data.pop(sync_only)
        return data


def report_from_json(data: dict, drift: bool = False) -> SyncReport:
    """A report as `to_json` wrote it (a served run's, read by the command that asked for it)."""
    target_type, object_type = (DriftTargetResult, DriftObjectResult) if drift else (TargetResult, ObjectResult)
    results = []
    for result in data["results"]:
        fields = {**result, "status": SyncStatus(result["status"]),
                  "objects": [object_type(**obj) for obj in result["objects"]]}
        results.append(target_type(**fields))
    return SyncReport(data["revision"], results)


class SyncFailed(Exception):
    """Some app failed (or was reverted) on some cluster; carries the whole report."""

    def __init__(self, report: SyncReport):
        super().__init__(report.failure_message())
        self.report = report


def summary_markdown(title: str, results: list[TargetResult]) -> str:
    """One table for a whole run: app x cluster, status, revision, objects changed,
    health, duration, and why when it did not succeed. An app whose objects are
    not known here (a cluster run's app, read back from its run's state) shows
    `-` as changed, not 0."""
    lines = [f"# {title}", "", "| app | cluster | status | revision | changed | health | time | message |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.app} | {r.cluster} | **{r.status.value}** | `{r.revision[:7] or '-'}` | "
              f"{r.changed if r.objects else '-'} | {table_cell(r.health or '-')} | {r.seconds:.1f} s | "
              f"{table_cell(r.message)} |" for r in results]
    return "\n".join(lines) + "\n"


def table_cell(text: str) -> str:
    """Text as one cell of a markdown table: its pipes escaped, on one line."""
    return text.replace("|", "\\|").replace("\n", " ")
