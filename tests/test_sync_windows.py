"""Sync windows (engine/spec/sync_windows.py, flows/window_gate.py). Fast: window
evaluation at given times across time zones and daylight saving, deny over
allow, manualSync, the next change, validation. On the real local cluster, a
deny window active now: a scheduled run (made by Prefect's scheduler) ends
Skipped with nothing applied and no artifact, a manual `gitops sync` is
refused naming the window, `--force-window` passes, drift is reported while
its heal waits, and `gitops status` shows the window."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import typer
import yaml
from typer.testing import CliRunner

from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.spec.appspec import parse_appspec
from prefect_gitops.engine.spec.sync_windows import SyncWindow, state_for, window_state

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc


def window(kind: str = "deny", schedule: str = "0 22 * * *", duration: str = "8h", zone: str = "Europe/Berlin",
           **more) -> SyncWindow:
    return SyncWindow(kind=kind, schedule=schedule, duration=duration, timeZone=zone, **more)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


# ---- when a window is active --------------------------------------------------------------------

def test_a_window_opens_at_its_schedule_in_its_own_time_zone_summer_and_winter():
    nightly = window()  # 22:00 Berlin: 21:00 UTC in winter, 20:00 UTC in summer
    assert nightly.active_until(datetime(2025, 1, 15, 20, 30, tzinfo=UTC)) is None
    assert nightly.active_until(datetime(2025, 7, 15, 20, 30, tzinfo=UTC)) == berlin(2025, 7, 16, 6, 0)
    assert nightly.active_until(berlin(2025, 1, 15, 22, 0)) == berlin(2025, 1, 16, 6, 0)  # the start is in
    assert nightly.active_until(berlin(2025, 1, 16, 6, 0)) is None  # the end is out
    assert window(zone="UTC").active_until(datetime(2025, 1, 15, 22, 30, tzinfo=UTC))


def test_daylight_saving_moves_neither_the_local_start_nor_the_elapsed_duration():
    nightly = window()
    # Clocks go forward at 02:00 on 2025-03-30: 8 elapsed hours from 22:00 CET end at 07:00 CEST.
    assert nightly.active_until(berlin(2025, 3, 30, 6, 30)) == berlin(2025, 3, 30, 7, 0)
    # A start that the change skips (02:30) fires at the first minute after it, as cron does.
    skipped = window(schedule="30 2 * * *", duration="1h")
    assert skipped.next_start(berlin(2025, 3, 30, 1, 0)) == berlin(2025, 3, 30, 3, 0)
    # Clocks go back on 2025-10-26: 09:00 stays 09:00 local (07:00 UTC before, 08:00 UTC after).
    morning = window(schedule="0 9 * * *", duration="1h")
    assert morning.next_start(berlin(2025, 10, 25, 12, 0)) == datetime(2025, 10, 26, 8, 0, tzinfo=UTC)
    assert morning.next_start(berlin(2025, 10, 24, 12, 0)) == datetime(2025, 10, 25, 7, 0, tzinfo=UTC)


# ---- allow, deny, manualSync ---------------------------------------------------------------------

OFFICE = dict(kind="allow", schedule="0 9 * * 1-5", duration="8h", name="office")
SATURDAY_NOON = berlin(2025, 3, 8, 12, 0)
MONDAY_NOON = berlin(2025, 3, 10, 12, 0)


def test_no_window_no_restriction():
    state = window_state([], SATURDAY_NOON)
    assert state.open and state.manual and state.summary() == "-"


def test_deny_wins_over_allow_and_allow_windows_close_the_time_outside_them():
    lunch_freeze = window(schedule="0 12 * * *", duration="1h", name="lunch")
    office = window(**OFFICE)
    assert window_state([office], MONDAY_NOON).summary() == "open (allow office), closes at 2025-03-10 17:00 CET"
    both = window_state([office, lunch_freeze], MONDAY_NOON)
    assert not both.open and both.closing == (lunch_freeze,)
    outside = window_state([office], SATURDAY_NOON)
    assert not outside.open and outside.closing == (office,)
    assert "outside every allow window: allow window office" in outside.reason()


def test_manual_sync_passes_only_where_the_windows_say_so():
    lax, strict = window(name="lax", manualSync=True), window(name="strict")
    night = berlin(2025, 3, 3, 23, 0)
    assert window_state([lax], night).allows(manual=True)
    assert not window_state([lax], night).allows(manual=False)  # a scheduled sync still waits
    assert not window_state([lax, strict], night).allows(manual=True)  # every active deny must allow it
    office_manual = window(**{**OFFICE, "manualSync": True})
    assert window_state([office_manual, window(**OFFICE, clusters=["x"])], SATURDAY_NOON).allows(manual=True)


# ---- when it changes, and how it is told ---------------------------------------------------------

def test_the_next_change_is_the_first_edge_that_flips_the_state():
    nightly = window(name="nightly")
    assert window_state([nightly], berlin(2025, 3, 3, 12, 0)).next_change == berlin(2025, 3, 3, 22, 0)
    inside = window_state([nightly], berlin(2025, 3, 3, 23, 0))
    assert inside.next_change == berlin(2025, 3, 4, 6, 0)
    # A second deny window overlapping the end of the first: syncs open when both have ended.
    early = window(schedule="0 5 * * *", duration="3h", name="early")
    assert window_state([nightly, early], berlin(2025, 3, 3, 23, 0)).next_change == berlin(2025, 3, 4, 8, 0)
    # Outside the office windows on a Saturday: Monday 09:00.
    assert window_state([window(**OFFICE)], SATURDAY_NOON).next_change == berlin(2025, 3, 10, 9, 0)


def test_a_window_that_never_ends_says_how_far_it_was_looked_at():
    always = window(schedule="* * * * *", duration="1h", name="always")
    state = window_state([always], SATURDAY_NOON)
    assert not state.open and state.next_change is None
    assert "syncs open not before" in state.reason() and "not before" in state.summary()


def test_the_reason_names_the_window_and_when_syncs_open_in_its_time_zone():
    state = window_state([window(name="nightly")], berlin(2025, 3, 3, 23, 0))
    assert state.reason() == ("deny window nightly (0 22 * * * for 8h, Europe/Berlin) is active until "
                              "2025-03-04 06:00 CET; syncs open at 2025-03-04 06:00 CET")
    assert state.summary() == "closed (deny nightly), opens at 2025-03-04 06:00 CET"
    assert window_state([window(name="nightly")], berlin(2025, 7, 3, 12, 0)).summary() == \
        "open, closes at 2025-07-03 22:00 CEST"
    assert state.to_json()["nextChange"] == "2025-03-04T05:00:00+00:00"


# ---- which windows an app has --------------------------------------------------------------------

SPEC = """\
syncWindows:
  - {name: prod-freeze, kind: deny, schedule: "0 22 * * *", duration: 8h, apps: ["web*"], clusters: [production]}
apps:
  - name: web-api
    path: web
    clusters: [staging, production]
  - name: db
    path: db
    clusters: [staging, production]
    syncWindows:
      - {name: db-only, kind: deny, schedule: "0 12 * * *", duration: 1h, clusters: [staging]}
"""


def test_the_repositorys_windows_by_app_and_cluster_patterns_and_an_apps_own():
    spec = parse_appspec(SPEC)
    night, noon = datetime(2025, 3, 3, 23, 0, tzinfo=UTC), datetime(2025, 3, 3, 12, 30, tzinfo=UTC)
    web, db = spec.app("web-api"), spec.app("db")
    assert not state_for(spec, web, "production", night).open
    assert state_for(spec, web, "staging", night).open
    assert state_for(spec, db, "production", night).open
    assert not state_for(spec, db, "staging", noon).open and state_for(spec, db, "production", noon).open


# ---- gitops.yaml problems -------------------------------------------------------------------------

def problems(text: str) -> list[str]:
    with pytest.raises(ProblemsFound) as found:
        parse_appspec(text)
    return [str(p) for p in found.value.problems]


BAD = """\
syncWindows:
  - kind: deny
    schedule: "0 22 * *"
    duration: 8h
  - kind: deny
    schedule: "0 0 22 * * *"
    duration: 0m
    timeZone: Mars/Olympus
apps:
  - name: web
    path: web
    clusters: [staging]
    syncWindows:
      - kind: maybe
        schedule: "0 25 * * *"
        duration: 8 hours
        apps: [web]
"""


def test_bad_windows_are_errors_with_file_line_and_rule():
    found = problems(BAD)
    expected = [
        ("gitops.yaml:3:", "syncWindows.0.schedule: schedule '0 22 * *' has 4 fields", "[repo.sync-window]"),
        ("gitops.yaml:6:", "syncWindows.1.schedule: schedule '0 0 22 * * *' has 6 fields", "[repo.sync-window]"),
        ("gitops.yaml:7:", "syncWindows.1.duration: duration '0m' is zero", "[repo.sync-window]"),
        ("gitops.yaml:8:", "syncWindows.1.timeZone: time zone 'Mars/Olympus' is not known", "[repo.sync-window]"),
        ("gitops.yaml:14:", "app/web: syncWindows.0.kind: Input should be 'allow' or 'deny'", "[app.sync-window]"),
        ("gitops.yaml:15:", "app/web: syncWindows.0.schedule: schedule '0 25 * * *' is not a valid cron schedule",
         "[app.sync-window]"),
        ("gitops.yaml:16:", "app/web: syncWindows.0.duration: duration '8 hours' is not a number and a unit",
         "[app.sync-window]"),
        ("gitops.yaml:17:", "app/web: syncWindows.0.apps: a window under an app is for that app",
         "[app.sync-window]"),
    ]
    assert len(found) == len(expected), found
    for problem, (where, what, rule) in zip(found, expected):
        assert problem.startswith(where) and what in problem and problem.endswith(rule), problem


def test_an_unknown_window_field_is_the_windows_problem():
    text = "apps: []\nsyncWindows:\n  - {kind: deny, schedule: '* * * * *', duration: 1h, when: now}\n"
    [problem] = problems(text)
    assert problem.startswith("gitops.yaml:3:") and "unknown field" in problem
    assert problem.endswith("[repo.sync-window]")


# ---- on the real local cluster ------------------------------------------------------------------

FROZEN = "frozen"


def frozen_repo_files(namespace: str, greeting: str) -> dict[str, str]:
    from plain_repo import configmap

    spec = {"syncWindows": [{"name": "freeze", "kind": "deny", "schedule": "* * * * *", "duration": "1h",
                             "apps": [FROZEN], "clusters": ["staging"]}],
            "apps": [{"name": FROZEN, "path": FROZEN, "namespace": namespace, "clusters": ["staging"],
                      "syncPolicy": {"selfHeal": True}}]}
    return {"gitops.yaml": yaml.safe_dump(spec, sort_keys=False),
            f"{FROZEN}/settings.yaml": configmap("settings", greeting=greeting)}


def cli(command, *args: str):
    app = typer.Typer()
    app.command()(command)
    return CliRunner().invoke(app, list(args))


def greeting(cluster, namespace: str) -> str:
    from conftest import kubectl

    return kubectl(cluster.kubeconfig, "get", "configmap", "settings", "-n", namespace,
                   "-o", "jsonpath={.data.greeting}").stdout


@pytest.fixture(scope="module")
def frozen(registered_clusters, prefect_api, tmp_path_factory):
    """An app under a deny window that is always active, synced once with
    --force-window (hello), then changed in Git (bonjour) and not synced."""
    from conftest import kubectl
    from plain_repo import forget_apps, make_plain_repo
    from prefect_gitops.cli.sync import sync_command

    staging = registered_clusters["staging"]
    namespace = f"windows-{secrets.token_hex(3)}"
    kubectl(staging.kubeconfig, "create", "namespace", namespace)
    repo = make_plain_repo(tmp_path_factory.mktemp("windows"), "windows", frozen_repo_files(namespace, "hello"))
    forced = cli(sync_command, "--repo", repo.block_name, "--force-window")
    repo.commit(frozen_repo_files(namespace, "bonjour"), "a change during the freeze")
    yield repo, namespace, staging, forced
    forget_apps(staging, FROZEN)
    kubectl(staging.kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.cluster
def test_force_window_passes_the_deny_window(frozen):
    repo, namespace, staging, forced = frozen
    assert forced.exit_code == 0, forced.output
    assert greeting(staging, namespace) == "hello"


@pytest.mark.cluster
def test_a_manual_sync_is_refused_naming_the_window_and_when_it_opens(frozen):
    from prefect_gitops.cli.sync import sync_command

    repo, namespace, staging, _ = frozen
    refused = cli(sync_command, "--repo", repo.block_name, "--json")
    assert refused.exit_code == 2, refused.output
    assert '"kind": "window"' in refused.output
    assert f"{FROZEN}@staging: deny window freeze (* * * * * for 1h, UTC) is active until" in refused.output
    assert "syncs open not before" in refused.output and "--force-window" in refused.output
    assert greeting(staging, namespace) == "hello"


@pytest.mark.cluster
def test_a_scheduled_sync_ends_skipped_naming_the_window_with_nothing_applied_and_no_artifact(frozen, prefect_api):
    """A run that Prefect's scheduler made (POST /deployments/{id}/schedule, as its
    scheduler service does: auto_scheduled), executed here as a worker would."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from prefect_gitops.flows.sync import gitops_sync
    from test_recovery import api_post

    repo, namespace, staging, _ = frozen
    # Paused: the server's scheduler service makes no runs of its own; hourly: one run in the past hour.
    deployment_id = gitops_sync.to_deployment(name=f"windows-{secrets.token_hex(3)}", cron="0 * * * *", paused=True,
                                              parameters={"repo": repo.block_name, "if_changed": True}).apply()
    try:
        now = datetime.now(UTC)
        httpx.post(f"{prefect_api}/deployments/{deployment_id}/schedule", timeout=30,
                   json={"start_time": (now - timedelta(hours=1)).isoformat(), "end_time": now.isoformat(),
                         "max_runs": 1}).raise_for_status()
        runs = api_post(prefect_api, "/flow_runs/filter", {"deployments": {"id": {"any_": [str(deployment_id)]}}})
        [scheduled] = runs
        assert scheduled["auto_scheduled"], scheduled
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(scheduled["id"])
        run_flow(gitops_sync, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(scheduled["id"]).state
        assert (state.type.value, state.name) == ("COMPLETED", "Skipped"), state
        assert f"{FROZEN}@staging: not synced: deny window freeze" in state.message
        artifacts = {"artifacts": {"flow_run_id": {"any_": [scheduled["id"]]}}}
        assert api_post(prefect_api, "/artifacts/filter", artifacts) == []
        assert greeting(staging, namespace) == "hello"
    finally:
        httpx.delete(f"{prefect_api}/deployments/{deployment_id}", timeout=30)


@pytest.mark.cluster
def test_drift_is_reported_while_its_heal_waits(frozen):
    from conftest import kubectl
    from prefect_gitops.engine.report import SyncStatus
    from prefect_gitops.flows.drift import gitops_drift

    repo, namespace, staging, _ = frozen
    kubectl(staging.kubeconfig, "label", "configmap", "settings", "-n", namespace, "hand=made")
    for heal in (None, True):  # the app's selfHeal (a scheduled check), and `gitops drift --heal`
        [result] = gitops_drift(repo=repo.block_name, heal=heal).results
        assert result.status is SyncStatus.FAILED and "drift from" in result.message, result.message
        assert "heal waits: deny window freeze" in result.message, result.message
        [drifted] = [o for o in result.objects if o.action == "skipped"]
        assert drifted.ref == f"ConfigMap/{namespace}/settings"
    assert kubectl(staging.kubeconfig, "get", "configmap", "settings", "-n", namespace,
                   "-o", "jsonpath={.metadata.labels.hand}").stdout == "made"


@pytest.mark.cluster
def test_status_shows_the_window_and_when_it_changes(frozen):
    from prefect_gitops.cli.status import app_statuses

    repo, *_ = frozen
    [row] = app_statuses(repo.block_name)
    assert row["syncWindow"]["open"] is False and row["syncWindow"]["manualSync"] is False
    assert row["syncWindow"]["closing"] == ["deny window freeze (* * * * * for 1h, UTC)"]
    assert row["syncWindow"]["summary"].startswith("closed (deny freeze), opens not before")
