"""The app list: `gitops.yaml` at the root of the GitOps repository.

An app is a path in the repository (per cluster), how to render it, which
clusters it goes to and how it is synced. Compare Argo CD's Application /
ApplicationSet and Flux's Kustomization; the field names follow theirs.

    apps:
      - name: web
        path: apps/web/overlays/{cluster}
        clusters: [staging]
        clusterSelector: {matchLabels: {env: prod}}
        namespace: web
        dependsOn: [base]
        syncPolicy: {prune: true, autoRevert: {enabled: true, mode: git}}
"""

from __future__ import annotations

import heapq
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)
from pydantic.alias_generators import to_camel
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from prefect_gitops.engine.objects import Source
from prefect_gitops.engine.problems import Problem, ProblemsFound, Severity
from prefect_gitops.engine.source.manifests import Document, parse_documents, read_text
from prefect_gitops.engine.spec.health_checks import HealthCheck, HealthChecks, in_effect
from prefect_gitops.engine.spec.ignore_rules import IgnoreRule
from prefect_gitops.engine.spec.policy_settings import PolicySettings
from prefect_gitops.engine.spec.sync_windows import AppSyncWindow, SyncWindow

APPSPEC_FILE = "gitops.yaml"
CLUSTER_PLACEHOLDER = "{cluster}"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"{value!r} is not a DNS label (lowercase letters, digits and '-', "
                         "at most 63, starting and ending alphanumeric)")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel,
                              frozen=True)


class RenderMode(str, Enum):
    AUTO = "auto"  # Chart.yaml -> helm, kustomization.yaml -> kustomize, else plain
    PLAIN = "plain"
    KUSTOMIZE = "kustomize"
    HELM = "helm"


class RevertMode(str, Enum):
    GIT = "git"  # push a revert commit: Git keeps telling the truth, needs write access
    CLUSTER = "cluster"  # re-apply the last healthy revision, record the bad one in the inventory


def _check_placeholders(value: str) -> str:
    """`{cluster}` is the only placeholder; anything else in braces is a typo."""
    unknown = [p for p in _PLACEHOLDER.findall(value) if p != CLUSTER_PLACEHOLDER]
    if unknown:
        raise ValueError(f"unknown placeholder {unknown[0]} (only {CLUSTER_PLACEHOLDER} is supported)")
    return value


def _fill(value: str, cluster: str) -> str:
    return value.replace(CLUSTER_PLACEHOLDER, cluster)


class HelmSpec(_Model):
    # Defaults to the app's name.
    release_name: DnsLabel | None = None
    # Relative to the chart directory, applied in order; `{cluster}` allowed.
    values_files: list[str] = Field(default_factory=list)
    # Applied after the files, so they win (as Argo CD's valuesObject).
    values: dict[str, Any] = Field(default_factory=dict)
    # CRDs from the chart's crds/ directory are rendered unless skipped.
    skip_crds: bool = False

    @field_validator("values_files")
    @classmethod
    def _values_files(cls, files: list[str]) -> list[str]:
        return [_check_placeholders(f) for f in files]


class SelectorOperator(str, Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class SelectorRequirement(_Model):
    key: str
    operator: SelectorOperator
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> SelectorRequirement:
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values != bool(self.values):
            raise ValueError(f"operator {self.operator.value} "
                             f"{'needs' if needs_values else 'takes no'} values")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        match self.operator:
            case SelectorOperator.IN:
                return present and labels[self.key] in self.values
            case SelectorOperator.NOT_IN:
                return not present or labels[self.key] not in self.values
            case SelectorOperator.EXISTS:
                return present
            case SelectorOperator.DOES_NOT_EXIST:
                return not present


class ClusterSelector(_Model):
    """A Kubernetes label selector over cluster labels; `{}` selects every cluster."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[SelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.match_labels.items())
                and all(r.matches(labels) for r in self.match_expressions))


class AutoRevert(_Model):
    enabled: bool = False
    mode: RevertMode = RevertMode.CLUSTER


class SyncPolicy(_Model):
    # Deleting is the dangerous verb: opt in, as in Argo CD.
    prune: bool = False
    # Re-apply when the live state drifts from Git.
    self_heal: bool = False
    # An empty render is refused unless allowed (a wrong path must not prune everything).
    allow_empty: bool = False
    auto_revert: AutoRevert = Field(default_factory=AutoRevert)
    health_timeout_seconds: int = Field(300, gt=0, le=24 * 3600)
    # The apply leaves fields of ignoreDifferences as they are live (Argo CD's
    # RespectIgnoreDifferences, there off by default); false: Git's values overwrite them.
    respect_ignore_differences: bool = True


class DecryptionProvider(str, Enum):
    SOPS = "sops"


class Decryption(_Model):
    """How the app's encrypted manifests are decrypted at render time."""
    provider: DecryptionProvider = DecryptionProvider.SOPS
    # Name of the Prefect Secret block holding the age private key(s).
    secret_ref: str = Field(min_length=1)


class App(_Model):
    name: DnsLabel
    # Exactly one: a path (`{cluster}` allowed) or a path per cluster name.
    path: str | None = Field(None, min_length=1)
    paths: dict[str, str] | None = None
    render: RenderMode = RenderMode.AUTO
    helm: HelmSpec | None = None
    # Target clusters by name and/or by labels (the union). With `paths` and
    # neither, the clusters are the keys of `paths`.
    clusters: list[str] = Field(default_factory=list)
    cluster_selector: ClusterSelector | None = None
    # For namespaced objects that name none.
    namespace: DnsLabel = "default"
    depends_on: list[str] = Field(default_factory=list)
    sync_policy: SyncPolicy = Field(default_factory=SyncPolicy)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    decryption: Decryption | None = None
    # A ServiceAccount in `namespace`: every request for the app impersonates it,
    # so the cluster's RBAC decides what the app may write.
    service_account_name: DnsLabel | None = None
    # Field managers whose fields in the app's objects are hand edits, hence drift
    # (None: kubectl's, engine.state.hand_edits.DEFAULT_DRIFT_MANAGERS; []: none).
    drift_managers: list[str] | None = None
    # Kustomize bases and Helm charts fetched from the network at render time
    # (unpinned content): refused unless allowed (engine/source/remote_sources.py).
    allow_remote_resources: bool = False
    # Fields of the app's objects that are not its to set: no diff, no drift, not
    # healed (engine/spec/ignore_rules.py, engine/changes/ignore.py).
    ignore_differences: list[IgnoreRule] = Field(default_factory=list)
    # Not synced, healed or reverted anywhere; drift is still reported (engine/state/suspend.py).
    suspend: bool = False
    # When the app may be synced (engine/spec/sync_windows.py), with the repository's windows.
    sync_windows: list[AppSyncWindow] = Field(default_factory=list)
    # CEL health rules for custom resources (engine/spec/health_checks.py); they
    # replace the repository's for the same kind.
    health_checks: HealthChecks = Field(default_factory=list)

    # Where in gitops.yaml the app is written, for problems about it.
    _source: Source = PrivateAttr(default_factory=lambda: Source(APPSPEC_FILE))
    # The top level's healthChecks, set by parse_appspec.
    _repository_health_checks: list[HealthCheck] = PrivateAttr(default_factory=list)

    @property
    def source(self) -> Source:
        return self._source

    @property
    def ref(self) -> str:
        return f"app/{self.name}"

    @property
    def health_checks_in_effect(self) -> list[HealthCheck]:
        return in_effect(self._repository_health_checks, self.health_checks)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str | None) -> str | None:
        return path if path is None else _check_placeholders(path)

    @field_validator("paths")
    @classmethod
    def _paths(cls, paths: dict[str, str] | None) -> dict[str, str] | None:
        if paths is not None and not paths:
            raise ValueError("paths must name at least one cluster")
        for cluster, path in (paths or {}).items():
            if not path:
                raise ValueError(f"the path of cluster {cluster!r} is empty")
            if CLUSTER_PLACEHOLDER in path:
                raise ValueError(f"paths are per cluster already: no {CLUSTER_PLACEHOLDER} needed")
        return paths

    @model_validator(mode="after")
    def _consistent(self) -> App:
        if (self.path is None) == (self.paths is None):
            raise ValueError("set exactly one of path and paths")
        if self.path is not None and not self.clusters and self.cluster_selector is None:
            raise ValueError("no clusters: set clusters and/or clusterSelector ({} selects all)")
        if self.paths is not None:
            unmapped = sorted(set(self.clusters) - set(self.paths))
            if unmapped:
                raise ValueError(f"clusters without an entry in paths: {', '.join(unmapped)}")
        if self.helm is not None and self.render not in (RenderMode.AUTO, RenderMode.HELM):
            raise ValueError(f"helm settings given but render is {self.render.value}")
        return self

    def path_for(self, cluster: str) -> str:
        """The app's path in the repository for one cluster (not yet checked for safety)."""
        if self.paths is not None:
            if cluster not in self.paths:
                raise ValueError(f"app {self.name} has no path for cluster {cluster!r}")
            return self.paths[cluster]
        return _fill(self.path or "", cluster)

    def values_files_for(self, cluster: str) -> list[str]:
        return [_fill(f, cluster) for f in (self.helm.values_files if self.helm else [])]

    def release_name(self) -> str:
        return (self.helm.release_name if self.helm else None) or self.name

    def selects(self, cluster: str, labels: dict[str, str]) -> bool:
        """Whether the app goes to this cluster."""
        if self.paths is not None and cluster not in self.paths:
            return False  # `paths` also bounds the clusters an app can go to
        if cluster in self.clusters:
            return True
        if self.cluster_selector is not None:
            return self.cluster_selector.matches(labels)
        return self.paths is not None and not self.clusters


class AppSpec(_Model):
    apps: list[App] = Field(default_factory=list)
    sync_windows: list[SyncWindow] = Field(default_factory=list)  # for the apps and clusters they name
    health_checks: HealthChecks = Field(default_factory=list)  # for every app

    def app(self, name: str) -> App:
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(name)

    def ordered_apps(self) -> list[App]:
        """Apps with each after the apps it depends on; ties broken by name."""
        by_name = {a.name: a for a in self.apps}
        waiting = {a.name: {d for d in a.depends_on if d in by_name} for a in self.apps}
        ready = [name for name, deps in waiting.items() if not deps]
        heapq.heapify(ready)
        ordered: list[App] = []
        while ready:
            name = heapq.heappop(ready)
            ordered.append(by_name[name])
            for other, deps in waiting.items():
                if name in deps:
                    deps.discard(name)
                    if not deps:
                        heapq.heappush(ready, other)
        return ordered

    def targets(self, clusters: dict[str, dict[str, str]]) -> list[tuple[App, str]]:
        """(app, cluster) pairs to sync, given cluster names and their labels:
        apps in dependency order, clusters by name within an app."""
        return [(app, cluster) for app in self.ordered_apps()
                for cluster in sorted(clusters) if app.selects(cluster, clusters[cluster])]

    def target_problems(self, clusters: dict[str, dict[str, str]]) -> list[Problem]:
        """Clusters named by apps that are not known: a warning each (the app
        still goes to the clusters that are)."""
        return [Problem(app.source, app.ref, "appspec.unknown-cluster",
                        f"cluster {name!r} is not known", Severity.WARNING)
                for app in self.apps
                for name in [*app.clusters, *(app.paths or {})] if name not in clusters]


def load_appspec(repo_root: Path) -> AppSpec:
    """Read and check `gitops.yaml`; every problem is raised at once, each
    naming gitops.yaml:LINE, the app and the rule."""
    file = Path(repo_root) / APPSPEC_FILE
    if not file.is_file():
        raise ProblemsFound([Problem(Source(APPSPEC_FILE), "", "appspec.missing",
                                     f"{APPSPEC_FILE} not found at the repository root")])
    text, problems = read_text(file, APPSPEC_FILE)
    if text is None:
        raise ProblemsFound(problems)
    return parse_appspec(text)


def parse_appspec(text: str, path: str = APPSPEC_FILE) -> AppSpec:
    """Check the text of a gitops.yaml. Each app is validated alone, so that
    one bad app does not hide the problems of the others or between them."""
    documents, problems = parse_documents(text, path, track_positions=True)
    if problems:
        raise ProblemsFound(problems)
    if len(documents) != 1 or not isinstance(documents[0].value, dict):
        line = documents[1].line if len(documents) > 1 else (documents[0].line if documents else 0)
        raise ProblemsFound([Problem(Source(path, line), "", "appspec.invalid",
                                     f"{path} must hold one mapping with an `apps` list")])
    document = documents[0]
    document.value = _as_written(document.value, document.node)
    top = AppSpec()
    try:  # everything but the apps: unknown top-level fields, `apps` not a list
        top = AppSpec.model_validate({**document.value, "apps": []})
    except ValidationError as error:
        problems.extend(_validation_problems(error, document, path))
    raw_apps = document.value.get("apps")
    if not isinstance(raw_apps, list):
        problems.append(Problem(Source(path, document.line_of(["apps"])), "", "appspec.invalid",
                                "apps: expected a list of apps"))
        raise ProblemsFound(problems)
    apps: dict[int, App] = {}
    for index, raw in enumerate(raw_apps):
        try:
            app = App.model_validate(raw)
        except ValidationError as error:
            problems.extend(_validation_problems(error, document, path, ("apps", index)))
            continue
        app._source = Source(path, document.line_of(("apps", index)))
        app._repository_health_checks = top.health_checks
        apps[index] = app
    problems.extend(_duplicate_problems(raw_apps, document, path))
    problems.extend(_relation_problems(apps, _raw_names(raw_apps), document, path))
    if problems:
        raise ProblemsFound(problems)
    return top.model_copy(update={"apps": list(apps.values())})  # with the top-level fields


# Booleans to YAML 1.1 (and to Kubernetes), words to YAML 1.2. In gitops.yaml they
# mean the word where a word is allowed (`resourceLimits: off`, a label `on`);
# where a boolean is wanted, pydantic reads the word as YAML 1.1 would.
_YAML11_BOOLEAN_WORDS = re.compile(r"y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF")


def _as_written(value: Any, node: Node | None, path: tuple = ()) -> Any:
    """`value` with each plain yes/no/on/off that YAML 1.1 made a boolean back
    to its word. Helm values keep YAML's reading: Helm reads them the same way."""
    if path[-2:] == ("helm", "values") or node is None:
        return value
    if isinstance(node, ScalarNode):
        written = isinstance(value, bool) and not node.style and _YAML11_BOOLEAN_WORDS.fullmatch(node.value)
        return node.value if written else value
    if isinstance(node, MappingNode) and isinstance(value, dict):
        children = {k.value: v for k, v in node.value if isinstance(k, ScalarNode)}  # keys are strings already
        return {k: _as_written(v, children.get(k), path + (k,)) for k, v in value.items()}
    if isinstance(node, SequenceNode) and isinstance(value, list) and len(value) == len(node.value):
        return [_as_written(v, n, path + (i,)) for i, (v, n) in enumerate(zip(value, node.value))]
    return value


def _raw_names(raw_apps: list) -> set[str]:
    """Names of all apps, invalid ones too: a dependency on an invalid app is
    reported with that app, not as unknown."""
    return {str(a["name"]) for a in raw_apps if isinstance(a, dict) and "name" in a}


def _duplicate_problems(raw_apps: list, document: Document, path: str) -> list[Problem]:
    problems, first_line = [], {}
    for index, raw in enumerate(raw_apps):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        line = document.line_of(("apps", index))
        if name in first_line:
            problems.append(Problem(Source(path, line), f"app/{name}", "appspec.duplicate-app",
                                    f"app {name} is defined twice (first at line {first_line[name]})"))
        first_line.setdefault(name, line)
    return problems


def _app_name(document: Document, index: int) -> str:
    app = document.value["apps"][index]
    return str(app.get("name") or f"#{index + 1}") if isinstance(app, dict) else f"#{index + 1}"


# The rule of a problem under these fields of gitops.yaml, as written at the top level and
# in an app (None: the field is an app's only); any other problem is appspec.invalid.
_FIELD_RULES = {"syncWindows": ("repo.sync-window", "app.sync-window"),
                "healthChecks": ("app.health-check", "app.health-check"),
                "ignoreDifferences": (None, "app.ignore-differences")}


def _rule_at(loc: tuple) -> str:
    in_app = loc[:1] == ("apps",) and len(loc) > 2
    field = loc[2] if in_app else loc[0] if loc else None
    rules = _FIELD_RULES.get(to_camel(field) if isinstance(field, str) else None, (None, None))
    return rules[in_app] or "appspec.invalid"


def _validation_problems(error: ValidationError, document: Document, path: str,
                         prefix: tuple = ()) -> list[Problem]:
    problems = []
    name = _app_name(document, prefix[1]) if prefix else ""
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(Problem(Source(path, document.line_of(prefix + item["loc"])),
                                f"app/{name}" if name else "",
                                _rule_at(prefix + item["loc"]),
                                f"{where + ': ' if where else ''}{message}"))
    return problems


def _relation_problems(apps: dict[int, App], names: set[str], document: Document,
                       path: str) -> list[Problem]:
    """What one app cannot see alone: unknown dependencies, cycles."""
    problems: list[Problem] = []
    for index, app in apps.items():
        for dep_index, dep in enumerate(app.depends_on):
            if dep not in names:
                line = document.line_of(("apps", index, "dependsOn", dep_index))
                problems.append(Problem(Source(path, line), app.ref, "appspec.unknown-dependency",
                                        f"app {app.name} depends on {dep!r}, which is not an app"))
    problems.extend(_cycle_problems(list(apps.values())))
    return problems


def _cycle_problems(apps: list[App]) -> list[Problem]:
    """One problem per dependency cycle, naming its apps in order."""
    ordered = {a.name for a in AppSpec(apps=apps).ordered_apps()}
    stuck = {a.name: a for a in apps if a.name not in ordered}
    problems, reported = [], set()
    for name in sorted(stuck):
        if name in reported:
            continue
        cycle = _find_cycle(name, stuck)
        if cycle is None or reported & set(cycle):
            continue
        reported.update(cycle)
        app = stuck[cycle[0]]
        problems.append(Problem(app.source, app.ref, "appspec.dependency-cycle",
                                "dependency cycle: " + " -> ".join([*cycle, cycle[0]])))
    return problems


def _find_cycle(start: str, stuck: dict[str, App]) -> list[str] | None:
    """Follow dependencies among stuck apps from `start` until a name repeats."""
    trail: list[str] = []
    name = start
    while name not in trail:
        trail.append(name)
        deps = sorted(d for d in stuck[name].depends_on if d in stuck)
        if not deps:
            return None
        name = deps[0]
    cycle = trail[trail.index(name):]
    pivot = cycle.index(min(cycle))  # start at the smallest name, for a stable message
    return cycle[pivot:] + cycle[:pivot]
