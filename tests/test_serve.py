"""prefect.yaml is the one definition of the deployments: Prefect's own loader
(the one `prefect deploy` uses) accepts it, and `gitops serve` builds the same
deployments from it - names, flows, parameters, schedules, concurrency,
triggers, tags, descriptions - with only the options of `gitops serve` changing
them. No cluster or server needed."""

from __future__ import annotations

import copy
from io import StringIO
from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._config import _load_deploy_configs_and_actions
from prefect.cli.deploy._models import DeploymentConfig, RawScheduleConfig
from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
from prefect.cli.deploy._triggers import _initialize_deployment_triggers
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from rich.console import Console

import prefect_gitops.cli.deployments
from prefect_gitops.cli.deployments import build, deployments

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
NAMES = ["gitops-drift", "gitops-recover", "gitops-rollback", "gitops-sync", "gitops-sync-cluster"]


def prefect_deploy_configs() -> dict[str, dict]:
    """The deployments as `prefect deploy` reads prefect.yaml (it prints, rather
    than raises, what it cannot read, and skips the file)."""
    printed = StringIO()
    configs, _ = _load_deploy_configs_and_actions(PREFECT_YAML, console=Console(file=printed))
    assert printed.getvalue() == "", printed.getvalue()
    return {c["name"]: c for c in configs}


def test_prefect_deploy_reads_every_deployment_and_every_key():
    configs = prefect_deploy_configs()
    assert sorted(configs) == NAMES
    # Prefect's model ignores keys it does not know: a misspelt key would vanish silently.
    for raw in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]:
        assert set(raw) <= set(DeploymentConfig.model_fields), raw["name"]
        for schedule in raw.get("schedules") or []:
            RawScheduleConfig.model_validate(schedule)  # forbids unknown keys
        _initialize_deployment_triggers(raw["name"], copy.deepcopy(raw.get("triggers") or []))  # validates


def test_serve_reads_the_same_file_as_prefect_deploy():
    assert prefect_gitops.cli.deployments.PREFECT_YAML.read_text() == PREFECT_YAML.read_text()


def test_serve_builds_what_prefect_deploy_reads():
    configs, built = prefect_deploy_configs(), {d.name: d for d in deployments()}
    assert sorted(built) == NAMES
    for name, config in configs.items():
        deployment = built[name]
        assert deployment.entrypoint.endswith(config["entrypoint"]), name
        assert deployment.parameters == config["parameters"], name
        assert deployment.tags == config["tags"] and deployment.description == config["description"], name
        assert schedules(deployment) == [prefect_deploy_schedule(s) for s in config.get("schedules", [])], name
        assert concurrency(deployment) == prefect_deploy_concurrency(config.get("concurrency_limit")), name
        assert deployment.triggers == _initialize_deployment_triggers(name, config.get("triggers", [])), name


def test_the_sample_values_are_those_of_the_loop():
    """What the tests of the flows and the README rely on."""
    built = {d.name: d for d in deployments()}
    assert {d.parameters["repo"] for d in built.values()} == {"fleet"}
    assert [s["interval"] for s in schedules(built["gitops-sync"])] == [60.0]
    assert [s["cron"] for s in schedules(built["gitops-drift"])] == ["*/10 * * * *"]
    assert concurrency(built["gitops-sync"]) == (1, ConcurrencyLimitStrategy.CANCEL_NEW)
    assert concurrency(built["gitops-recover"]) == (1, None)  # queued: each request may name another cluster
    assert not built["gitops-recover"].schedules and not built["gitops-rollback"].schedules


def test_the_recover_trigger_expects_the_event_request_recovery_emits():
    from prefect_gitops.flows.recovery import RECOVER_EVENT  # the flows are imported when served anyway

    [trigger] = {d.name: d for d in deployments()}["gitops-recover"].triggers
    assert trigger.expect == {RECOVER_EVENT}
    assert trigger.parameters == {"cluster": "{{ event.resource['gitops.cluster'] }}"}


def test_serve_options_replace_the_repo_and_the_sync_and_drift_schedules():
    built = {d.name: d for d in deployments("other", sync_interval_s=30, drift_cron="*/5 * * * *")}
    unchanged = {d.name: d for d in deployments()}
    assert {d.parameters["repo"] for d in built.values()} == {"other"}
    assert built["gitops-sync"].parameters["if_changed"] is True
    assert [s["interval"] for s in schedules(built["gitops-sync"])] == [30.0]
    assert [s["cron"] for s in schedules(built["gitops-drift"])] == ["*/5 * * * *"]
    for name in ("gitops-recover", "gitops-rollback"):
        assert schedules(built[name]) == schedules(unchanged[name])
        assert built[name].triggers == unchanged[name].triggers


def test_a_key_serve_does_not_know_is_refused_before_any_flow_is_imported():
    with pytest.raises(ValueError, match=r"gitops-sync: gitops serve does not know \['schedule_interval'\]"):
        build({"name": "gitops-sync", "entrypoint": "no/such/module.py:flow", "schedule_interval": 60})


# -- helpers ---------------------------------------------------------------------------


def schedules(deployment) -> list[dict]:
    """Each schedule without its anchor date (the time it was built)."""
    return [_schedule_fields(s.schedule, s.active, s.parameters) for s in deployment.schedules or []]


def prefect_deploy_schedule(config: dict) -> dict:
    made = _schedule_config_to_deployment_schedule(config)
    return _schedule_fields(made["schedule"], made.get("active", True), made.get("parameters", {}))


def _schedule_fields(schedule, active: bool, parameters: dict) -> dict:
    fields = schedule.model_dump(exclude={"anchor_date"})
    if "interval" in fields:
        fields["interval"] = fields["interval"].total_seconds()
    return {**fields, "active": active, "parameters": parameters}


def concurrency(deployment) -> tuple[int | None, ConcurrencyLimitStrategy | None]:
    options = deployment.concurrency_options
    return deployment.concurrency_limit, options.collision_strategy if options else None


def prefect_deploy_concurrency(config) -> tuple[int | None, ConcurrencyLimitStrategy | None]:
    if isinstance(config, dict):
        return config["limit"], ConcurrencyLimitStrategy(config.get("collision_strategy", "ENQUEUE"))
    return config, None
