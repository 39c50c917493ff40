"""What a sync does to each object, shared by diff, apply and prune: a ChangeSet
of ObjectChanges, each with an Action (Flux's ssa.ChangeSet, in Python)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from prefect_gitops.engine.objects import Identified, Source


class Action(str, Enum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    PRUNED = "pruned"
    SKIPPED = "skipped"


class Fate(str, Enum):
    """What became of a change in the cluster."""

    NOT_ATTEMPTED = "not attempted"
    DONE = "done"  # written or deleted
    FAILED = "failed"
    UNKNOWN = "unknown"  # its write was sent and never answered: it may have been made


# The actions that write to (or delete from) the cluster.
CHANGING = (Action.CREATED, Action.CONFIGURED, Action.PRUNED)

# Set on an object in Git: when an immutable field changes, delete and create it again.
RECREATE_ANNOTATION = "gitops.prefect.io/recreate"


def annotations_of(obj: dict | None) -> dict:
    meta = (obj or {}).get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def labels_of(obj: dict | None) -> dict:
    meta = (obj or {}).get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


@dataclass
class ObjectChange(Identified):
    """One object of a sync. After the plan, `action` is what will happen; `fate`
    what became of it in the cluster."""

    api_version: str
    kind: str
    namespace: str
    name: str
    source: Source | None  # None for objects to prune: they are no longer in Git
    action: Action
    diff: str = ""
    error: str | None = None
    # Kept out of repr: both may hold Secret data (the dry-run result is masked,
    # the desired body cannot be: it is what gets applied).
    dry_run_result: dict | None = field(default=None, repr=False)
    desired: dict | None = field(default=None, repr=False)
    fate: Fate = Fate.NOT_ATTEMPTED
    # Not dry-run yet: its CRD or Namespace is applied earlier in the same sync.
    deferred: bool = False
    # Deferred because its namespace does not exist yet: neither can the object,
    # so apply writes it without a dry-run first.
    in_new_namespace: bool = False
    # An immutable field changes: the object must be deleted and created again.
    recreate: bool = False
    # No longer this app's (another owner's label): left alone, and it leaves the inventory.
    released: bool = False
    # The error may pass if tried again (connection lost, 429, 5xx): the stage is retried.
    transient: bool = False
    # Current in the apply's own answer (a ConfigMap is at once): the health wait does not read it again.
    current_when_applied: bool = False

    @property
    def in_desired_set(self) -> bool:
        return self.desired is not None

    @property
    def done(self) -> bool:
        return self.fate is Fate.DONE

    def fail(self, verb: str, message: str, transient: bool = False, maybe_done: bool = False) -> None:
        """Record an error, wrapped with the object it is about; `maybe_done`: the
        write was sent and never answered. A change already done stays done (what
        failed came after its write: waiting for a CRD to be Established)."""
        self.error = f"{self.ref}: {verb} failed: {message}"
        self.transient = transient
        if self.fate is not Fate.DONE:
            self.fate = Fate.UNKNOWN if maybe_done else Fate.FAILED

    def clear_error(self) -> None:
        """Before another attempt: the error forgotten; a change not done is not attempted yet."""
        self.error, self.transient = None, False
        if self.fate is not Fate.DONE:
            self.fate = Fate.NOT_ATTEMPTED

    @property
    def outcome(self) -> str:
        """Its fate as the report says it; "" when there was nothing to do."""
        return self.fate.value if self.action in CHANGING else ""


@dataclass
class ChangeSet:
    changes: list[ObjectChange] = field(default_factory=list)
    # Writing stopped because the cluster could take no more (unreachable, Lease lost).
    halted: bool = False

    def __iter__(self):
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def changed(self) -> list[ObjectChange]:
        """Objects that are (or were) written or deleted."""
        return [c for c in self.changes if c.action in CHANGING]

    def by_action(self) -> dict[Action, list[ObjectChange]]:
        grouped: dict[Action, list[ObjectChange]] = {a: [] for a in Action}
        for change in self.changes:
            grouped[change.action].append(change)
        return grouped

    def desired(self) -> list[ObjectChange]:
        return [c for c in self.changes if c.in_desired_set]

    def errors(self) -> list[ObjectChange]:
        return [c for c in self.changes if c.error]

    @property
    def ok(self) -> bool:
        return not self.errors()

    def only_transient_errors(self) -> bool:
        """Failed, and every failure may pass if tried again."""
        errors = self.errors()
        return bool(errors) and all(c.transient for c in errors)

    def not_done(self) -> list[ObjectChange]:
        """Changes planned and not carried out (yet)."""
        return [c for c in self.changed() if not c.done]

    def get(self, kind: str, name: str, namespace: str = "") -> ObjectChange | None:
        for change in self.changes:
            if (change.kind, change.name, change.namespace) == (kind, name, namespace):
                return change
        return None

    def summary(self) -> str:
        """e.g. "2 created, 1 configured, 5 unchanged"."""
        counts = Counter(c.action for c in self.changes)
        text = ", ".join(f"{counts[a]} {a.value}" for a in Action if counts[a]) or "no objects"
        errors = len(self.errors())
        return f"{text}, {errors} error(s)" if errors else text

    def error_text(self) -> str:
        """Every object's error, on one line."""
        return "; ".join(c.error for c in self.errors())

    def failure_text(self) -> str:
        """A failed write in one line: the first error, then what became of the
        changes, e.g. "...: connection refused (of 200 changes: 107 done, 1
        failed, 92 not attempted)"."""
        errors = self.errors()
        first = errors[0].error if errors else "no error"
        counts = Counter(c.outcome for c in self.changed())
        order = (Fate.DONE, Fate.FAILED, Fate.UNKNOWN, Fate.NOT_ATTEMPTED)
        tally = ", ".join(f"{counts[f.value]} {f.value}" for f in order if counts[f.value])
        return f"{first} (of {len(self.changed())} changes: {tally})"

    def raise_for_errors(self) -> None:
        if not self.ok:
            raise ChangeSetError(self)


class ChangeSetError(Exception):
    """Some objects failed; the ChangeSet says which were done and which were not."""

    def __init__(self, changeset: ChangeSet):
        self.changeset = changeset
        lines = "\n".join(f"  {c.error}" for c in changeset.errors())
        pending = [c.ref for c in changeset.not_done() if not c.error]
        tail = f"\nnot done: {', '.join(pending)}" if pending else ""
        super().__init__(f"{len(changeset.errors())} object(s) failed:\n{lines}{tail}")
