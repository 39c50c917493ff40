"""The deployments of prefect-gitops as Prefect's RunnerDeployments, for a
process that serves them without a work pool or worker (`gitops serve`, the
demo's recovery runner, the served commands).

The deployments are defined once, in prefect.yaml: `prefect deploy` reads it at
the project's root, and this module reads the copy shipped in this package
(cli/prefect.yaml, a link to the root's file in the checkout). What only a work
pool needs (work_pool, build, push, pull) is left out; any other key this
module does not know is refused, so the two ways of deploying cannot drift apart."""

from __future__ import annotations

import functools
import importlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # Prefect is imported when a deployment is built, not when the CLI starts
    from prefect import Flow
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentTriggerTypes
    from prefect.schedules import Schedule

PREFECT_YAML = Path(__file__).resolve().parent / "prefect.yaml"
SYNC, DRIFT = "gitops-sync", "gitops-drift"

# How a worker gets and runs the code; a served deployment runs it in this process.
_WORKER_ONLY = {"work_pool", "build", "push", "pull"}
_SERVED = {"name", "entrypoint", "description", "tags", "version", "parameters", "schedules", "paused",
           "concurrency_limit", "triggers", "enforce_parameter_schema"}


@functools.cache
def _adapter(kind: str):
    """pydantic's readers of a trigger, a duration and a date, as prefect deploy reads them."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    return TypeAdapter({"trigger": DeploymentTriggerTypes, "duration": timedelta, "datetime": datetime}[kind])


def definitions(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments` of prefect.yaml, as written."""
    return yaml.safe_load(path.read_text())["deployments"]


def deployments(repo: str | None = None, sync_interval_s: float | None = None, drift_cron: str | None = None,
                path: Path = PREFECT_YAML) -> list[RunnerDeployment]:
    """Every deployment of prefect.yaml; `repo` replaces the `repo` parameter of
    each, `sync_interval_s` and `drift_cron` the schedules of sync and drift."""
    schedules = {SYNC: [{"interval": sync_interval_s}] if sync_interval_s else None,
                 DRIFT: [{"cron": drift_cron}] if drift_cron else None}
    return [build(spec, repo, schedules.get(spec["name"])) for spec in definitions(path)]


def deployment(name: str, repo: str | None = None, path: Path = PREFECT_YAML) -> RunnerDeployment:
    """One deployment of prefect.yaml, by name (a runner serving only the recovery)."""
    [spec] = [s for s in definitions(path) if s["name"] == name]
    return build(spec, repo)


def build(spec: dict[str, Any], repo: str | None = None,
          schedules: list[dict[str, Any]] | None = None) -> RunnerDeployment:
    """A deployment of prefect.yaml as `flow.to_deployment` makes it."""
    unknown = set(spec) - _SERVED - _WORKER_ONLY
    if unknown:
        raise ValueError(f"prefect.yaml: deployment {spec['name']}: "
                         f"gitops serve does not know {sorted(unknown)}")
    parameters = dict(spec.get("parameters") or {})
    if repo is not None:
        parameters["repo"] = repo
    schedules = schedules or spec.get("schedules")
    options = {key: spec[key] for key in spec
               if key in ("description", "tags", "version", "paused", "enforce_parameter_schema")}
    return load_flow(spec["entrypoint"]).to_deployment(
        name=spec["name"], parameters=parameters,
        schedules=[schedule(s) for s in schedules] if schedules is not None else None,
        concurrency_limit=concurrency_limit(spec.get("concurrency_limit")),
        triggers=[trigger(spec["name"], i, t) for i, t in enumerate(spec.get("triggers") or [], start=1)],
        **options)


def load_flow(entrypoint: str) -> Flow:
    """`flows/sync.py:gitops_sync` -> the flow, imported as prefect_gitops.flows.sync
    (so an installed copy works from any directory)."""
    file, _, name = entrypoint.partition(":")
    module = importlib.import_module("prefect_gitops." + file.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def schedule(spec: dict[str, Any]) -> Schedule:
    """A prefect.yaml schedule (`interval`, `cron` or `rrule`, with its options)
    as a Prefect schedule."""
    from prefect.schedules import Schedule

    fields = dict(spec)
    if "interval" in fields:  # seconds, "HH:MM:SS" or ISO 8601, as prefect deploy reads it
        fields["interval"] = _adapter("duration").validate_python(fields["interval"])
    if "anchor_date" in fields:
        fields["anchor_date"] = _adapter("datetime").validate_python(fields["anchor_date"])
    return Schedule(**fields)


def concurrency_limit(spec: int | dict[str, Any] | None) -> int | ConcurrencyLimitConfig | None:
    """`concurrency_limit: 1` or `{limit, collision_strategy, grace_period_seconds}`."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    if not isinstance(spec, dict):
        return spec
    fields = dict(spec)
    if "collision_strategy" in fields:
        fields["collision_strategy"] = ConcurrencyLimitStrategy(fields["collision_strategy"])
    return ConcurrencyLimitConfig(**fields)


def trigger(deployment_name: str, number: int, spec: dict[str, Any]) -> DeploymentTriggerTypes:
    """A trigger as `prefect deploy` reads it, with the same default name."""
    return _adapter("trigger").validate_python({"name": f"{deployment_name}__automation_{number}", **spec})
