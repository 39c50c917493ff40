"""Health checks for custom resources in CEL (`healthChecks` in gitops.yaml).

Fast: the order and outcomes of the expressions on objects (the real `cel`
library), what an object lacks or an expression gets wrong, and gitops.yaml's
problems (file:line, rule app.health-check). On the real local cluster: a custom
resource becomes InProgress, Failed and Current as its status subresource is
written with kubectl, read through the engine's health wait, through `gitops
status` (app_statuses) and through a sync that waits for health."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from prefect_gitops.engine.health import cel_rules
from prefect_gitops.engine.health.cel_rules import CelHealthChecks, check_expression
from prefect_gitops.engine.health.rules import HealthStatus, compute_health
from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.spec.appspec import parse_appspec

CURRENT, IN_PROGRESS, FAILED = HealthStatus.CURRENT, HealthStatus.IN_PROGRESS, HealthStatus.FAILED
CONDITION = "status.conditions.exists(c, c.type == 'Ready' && c.status == '{}')"
RULE = {"apiVersion": "cel.example.com/v1", "kind": "Gadget",
        "inProgress": "has(status.phase) && status.phase == 'Provisioning'",
        # Broken: Failed here, Current to kstatus (no Ready condition): told apart on the cluster.
        "failed": f"(has(status.phase) && status.phase == 'Broken') || {CONDITION.format('False')}",
        "current": CONDITION.format("True")}


def gitops_yaml(repository_rules: list[dict], app_rules: list[dict] | None = None, **app) -> str:
    app = {"name": "gadgets", "path": "gadgets", "clusters": ["staging"], **app}
    if app_rules is not None:
        app["healthChecks"] = app_rules
    return yaml.safe_dump({"healthChecks": repository_rules, "apps": [app]}, sort_keys=False)


def checks(*rules: dict, app_rules: list[dict] | None = None) -> CelHealthChecks:
    [app] = parse_appspec(gitops_yaml(list(rules), app_rules)).apps
    return CelHealthChecks(app.health_checks_in_effect)


def gadget(api_version: str = "cel.example.com/v1", **status) -> dict:
    obj = {"apiVersion": api_version, "kind": "Gadget", "metadata": {"name": "g", "generation": 1}, "spec": {"size": 2}}
    return {**obj, "status": status} if status else obj


def ready(value: str) -> list[dict]:
    return [{"type": "Ready", "status": value, "reason": "Because"}]


# ---- evaluation -------------------------------------------------------------------------------

@pytest.mark.parametrize("obj, status, words", [
    # No status yet: every expression reads a field the object lacks; said, not an error.
    (gadget(), IN_PROGRESS, "failed, current: the object has no field 'conditions'"),
    (gadget(conditions=ready("False")), FAILED, "failed: (has(status.phase)"),
    (gadget(phase="Broken"), FAILED, "failed: (has(status.phase)"),
    (gadget(conditions=ready("True")), CURRENT, "current: status.conditions"),
    # Flux's order: inProgress before failed, failed before current.
    (gadget(phase="Provisioning", conditions=ready("False")), IN_PROGRESS, "inProgress: has(status.phase)"),
    (gadget(conditions=ready("False") + ready("True")), FAILED, "failed:"),
    (gadget(conditions=ready("Unknown")), IN_PROGRESS, "none of inProgress, failed, current is true"),
    # The version is not part of the match (as Flux's GroupKind).
    (gadget("cel.example.com/v2beta1", conditions=ready("True")), CURRENT, "current:"),
])
def test_the_first_true_expression_decides(obj, status, words):
    health = compute_health(obj, custom=checks(RULE))
    assert (health.status, health.reason) == (status, "CELHealthCheck") and words in health.message, health


def test_the_rule_replaces_kstatus_conditions_but_not_generation_or_deletion():
    rule = checks(RULE)
    stalled = gadget(conditions=ready("True") + [{"type": "Stalled", "status": "True"}])
    assert compute_health(stalled).status is FAILED  # kstatus without the rule
    assert compute_health(stalled, custom=rule).status is CURRENT
    lagging = gadget(conditions=ready("True"), observedGeneration=0)
    assert compute_health(lagging, custom=rule).reason == "LatestGenerationNotObserved"
    deleted = gadget(conditions=ready("True"))
    deleted["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert compute_health(deleted, custom=rule).status is HealthStatus.TERMINATING


def test_kinds_without_a_rule_keep_the_built_in_rules():
    rule = checks(RULE)
    other = {**gadget(conditions=ready("False")), "kind": "Widget"}
    assert rule(other) is None and not rule.covers("cel.example.com/v1", "Widget")
    assert compute_health(other, custom=rule).reason == "Because"  # the generic Ready rule


@pytest.mark.parametrize("current, obj, status, words", [
    # has() below status works before any status is written (Flux: has(status) is an error).
    ("!has(status.conditions)", gadget(), CURRENT, "current:"),
    # A list shorter than read, and a top-level field the object lacks: not true yet.
    ("status.conditions[0].status == 'True'", gadget(conditions=[]), IN_PROGRESS, "(the list is shorter)"),
    ("data.ready == 'yes'", gadget(), IN_PROGRESS, "the object has no field 'data'"),
    # Wrong for good: Failed at once, not a wait until the timeout.
    ("spec.size > 'big'", gadget(), FAILED, "current cannot be evaluated: No such overload"),
    ("spec.size", gadget(), FAILED, "current gave a int, not true or false"),
    # cel-go's string and set extensions, as Flux has them.
    ("metadata.name.upperAscii() == 'G' && sets.contains(['a', 'b'], ['b'])", gadget(), CURRENT, "current:"),
])
def test_what_an_object_lacks_waits_and_a_wrong_expression_fails(current, obj, status, words):
    health = compute_health(obj, custom=checks({**RULE, "inProgress": None, "failed": None, "current": current}))
    assert health.status is status and words in health.message, health


def test_a_result_that_is_not_a_bool_names_its_type_not_its_value():
    secretish = {"apiVersion": "cel.example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
                 "spec": {"token": "hunter2"}}
    health = compute_health(secretish, custom=checks({**RULE, "current": "spec.token"}))
    assert health.status is FAILED and "hunter2" not in str(health) and "str" in health.message


def test_each_expression_is_compiled_once_not_per_object(monkeypatch):
    import cel

    compiled = []
    real_compile = cel.compile
    monkeypatch.setattr(cel, "compile", lambda source: compiled.append(source) or real_compile(source))
    cel_rules._program.cache_clear()
    rule = checks(RULE)
    for i in range(200):
        rule(gadget(conditions=ready("True" if i % 2 else "False")))
    assert sorted(compiled) == sorted([RULE["inProgress"], RULE["failed"], RULE["current"]])


@pytest.mark.parametrize("name", sorted(cel_rules.NATIVE_FUNCTIONS))
def test_every_function_taken_as_known_is_one_the_library_has(name):
    """The list that validation trusts is checked against the library itself."""
    at = "timestamp('2024-03-05T06:07:08.009Z')"
    calls = {"size": "size([1]) == 1", "int": "int('3') == 3", "uint": "uint(3) == 3u", "double": "double(1) == 1.0",
             "string": "string(1) == '1'", "bytes": "bytes('a') == b'a'", "dyn": "dyn(1) == 1",
             "type": "type(1) == int", "timestamp": f"{at} > timestamp('2023-01-01T00:00:00Z')",
             "duration": "duration('1m') == duration('60s')", "contains": "'abc'.contains('b')",
             "startsWith": "'abc'.startsWith('a')", "endsWith": "'abc'.endsWith('c')",
             "matches": "'abc'.matches('^a')", "getFullYear": f"{at}.getFullYear() == 2024",
             "getMonth": f"{at}.getMonth() == 2", "getDayOfYear": f"{at}.getDayOfYear() == 64",
             "getDayOfMonth": f"{at}.getDayOfMonth() == 4", "getDate": f"{at}.getDate() == 5",
             "getDayOfWeek": f"{at}.getDayOfWeek() == 2", "getHours": f"{at}.getHours() == 6",
             "getMinutes": f"{at}.getMinutes() == 7", "getSeconds": f"{at}.getSeconds() == 8",
             "getMilliseconds": f"{at}.getMilliseconds() == 9"}
    assert compute_health(gadget(), custom=checks({**RULE, "inProgress": None, "failed": None,
                                                   "current": calls[name]})).status is CURRENT


# ---- gitops.yaml ------------------------------------------------------------------------------

def problems(text: str) -> list[tuple[int, str, str, str]]:
    with pytest.raises(ProblemsFound) as raised:
        parse_appspec(textwrap.dedent(text).lstrip("\n"))
    return [(p.source.line, p.object_ref, p.rule, p.message) for p in raised.value.problems]


def test_bad_expressions_name_their_line_and_the_rule():
    found = problems("""
        healthChecks:
          - apiVersion: cel.example.com/v1
            kind: Gadget
            current: "status.conditions.exists(c, c.type == 'Ready'"
        apps:
          - name: gadgets
            path: gadgets
            clusters: [staging]
            healthChecks:
              - apiVersion: cel.example.com/v1
                kind: Sprocket
                failed: "status.?conditions.orValue([]).size() > 0"
                current: "status.conditions.exsts(c, c.type == 'Ready')"
              - apiVersion: apps/v1
                kind: Deployment
                current: "true"
        """)
    assert sorted(found) == [
        (4, "", "app.health-check", "healthChecks.0.current: CEL syntax error at column 46: missing ')' at '<EOF>'"),
        (12, "app/gadgets", "app.health-check",
         "healthChecks.0.failed: CEL syntax error at column 7: unsupported syntax '.?'"),
        (13, "app/gadgets", "app.health-check", "healthChecks.0.current: CEL unknown function 'exsts'"),
        (14, "app/gadgets", "app.health-check",
         "healthChecks.1: Deployment (apps/v1) has a built-in health rule; healthChecks are for kinds without one "
         "(custom resources)"),
    ]


@pytest.mark.parametrize("entry, line, words", [
    ({"apiVersion": "cel.example.com/v1", "kind": "Gadget"}, 2, "healthChecks.0.current: Field required"),
    ({**RULE, "failed": "  "}, 5, "healthChecks.0.failed: an empty expression"),
    ({**RULE, "ready": "true"}, 8, "healthChecks.0.ready: unknown field"),  # failed takes two lines
])
def test_a_malformed_entry_is_a_health_check_problem(entry, line, words):
    with pytest.raises(ProblemsFound) as raised:
        parse_appspec(gitops_yaml([entry]))
    [problem] = raised.value.problems
    assert (problem.rule, problem.source.line) == ("app.health-check", line) and words in problem.message, problem


def test_one_rule_per_kind_in_a_list():
    with pytest.raises(ProblemsFound) as raised:
        parse_appspec(gitops_yaml([], [RULE, {**RULE, "apiVersion": "cel.example.com/v2"}]))
    [problem] = raised.value.problems
    assert problem.rule == "app.health-check" and "entry 2 (Gadget of cel.example.com/v2) repeats entry 1" \
        in problem.message


def test_an_apps_rule_replaces_the_repositorys_for_its_kind():
    sprocket = {**RULE, "kind": "Sprocket"}
    own = {**RULE, "inProgress": None, "failed": None, "current": "true"}
    [app] = parse_appspec(gitops_yaml([RULE, sprocket], [own])).apps
    assert [(c.kind, c.current) for c in app.health_checks_in_effect] == [("Sprocket", RULE["current"]),
                                                                         ("Gadget", "true")]
    rule = checks(RULE, sprocket, app_rules=[own])
    assert rule(gadget(conditions=ready("False"))).status is CURRENT  # the app's
    assert rule({**gadget(conditions=ready("False")), "kind": "Sprocket"}).status is FAILED  # the repository's


def test_check_expression_accepts_what_flux_users_write():
    check_expression("status.conditions.filter(e, e.type == 'Synced').all(e, e.status == 'True')")
    check_expression("has(status.observedGeneration) && status.observedGeneration == metadata.generation")


# ---- on the real cluster ----------------------------------------------------------------------

GADGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.cel.example.com"},
    "spec": {"group": "cel.example.com", "scope": "Namespaced",
             "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                               "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}
NAMESPACE = "cel-health"
HEALTH_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def repo(registered_clusters, prefect_api, tmp_path_factory):
    """One app on staging: the Gadget CRD, a namespace and one Gadget judged by RULE."""
    from plain_repo import forget_apps, make_plain_repo, namespace_object
    from conftest import kubectl

    gadgets = {"name": "gadgets", "path": "gadgets", "clusters": ["staging"], "namespace": NAMESPACE,
               "syncPolicy": {"healthTimeoutSeconds": HEALTH_TIMEOUT_S}}
    files = {"gitops.yaml": yaml.safe_dump({"healthChecks": [RULE], "apps": [gadgets]}, sort_keys=False),
             "gadgets/crd.yaml": yaml.safe_dump(GADGET_CRD), "gadgets/namespace.yaml": namespace_object(NAMESPACE),
             "gadgets/gadget.yaml": yaml.safe_dump(gadget())}
    yield make_plain_repo(tmp_path_factory.mktemp("cel-health"), "cel-health", files)
    staging = registered_clusters["staging"]
    kubectl(staging.kubeconfig, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
    kubectl(staging.kubeconfig, "delete", "crd", GADGET_CRD["metadata"]["name"], "--ignore-not-found", check=False)
    forget_apps(staging, "gadgets")


def write_status(kubeconfig, **status) -> None:
    from conftest import kubectl

    kubectl(kubeconfig, "patch", "gadget", "g", "-n", NAMESPACE, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))


def sync(repo) -> dict:
    """The results of a sync by app, whether or not an app failed."""
    from prefect_gitops.engine.report import SyncFailed
    from prefect_gitops.flows.sync import gitops_sync

    try:
        report = gitops_sync(repo=repo.block_name)
    except SyncFailed as failed:
        report = failed.report
    return {r.app: r for r in report.results}


@pytest.mark.cluster
def test_a_sync_waits_for_the_rule_and_says_what_the_gadget_lacks(repo):
    # No controller wrote a status: the health wait times out naming the missing field.
    gadgets = sync(repo)["gadgets"]
    assert gadgets.status.value == "failed" and f"timed out after {HEALTH_TIMEOUT_S} s" in gadgets.message
    assert "Gadget/cel-health/g InProgress (failed, current: the object has no field 'conditions')" in gadgets.message


@pytest.mark.cluster
def test_the_status_subresource_makes_it_in_progress_failed_and_current(repo, registered_clusters):
    from prefect_gitops.cli.status import app_statuses
    from prefect_gitops.engine.cluster.kube import KubeClient
    from prefect_gitops.engine.health.wait import ObjectRef, wait_for_health

    staging = registered_clusters["staging"]
    ref = ObjectRef("cel.example.com/v1", "Gadget", NAMESPACE, "g")
    with KubeClient.from_kubeconfig(staging.kubeconfig) as kube:
        for status, expected in (({"phase": "Provisioning", "conditions": ready("False")}, IN_PROGRESS),
                                 ({"phase": "Done", "conditions": ready("False")}, FAILED),
                                 ({"phase": "Done", "conditions": ready("True")}, CURRENT)):
            write_status(staging.kubeconfig, **status)
            [seen] = wait_for_health(kube, [ref], timeout_s=0, custom=checks(RULE)).results
            assert seen.health.status is expected, seen
            if expected is FAILED:  # kstatus alone would say InProgress (Ready is False)
                [row] = app_statuses(repo.block_name)
                assert row["health"] == "Failed", row


@pytest.mark.cluster
def test_a_sync_fails_at_once_on_failed_and_succeeds_on_current(repo, registered_clusters):
    staging = registered_clusters["staging"].kubeconfig
    # Current to kstatus, Failed by the rule: the sync's diff read it so, and the wait too.
    write_status(staging, phase="Broken", conditions=[])
    failed = sync(repo)["gadgets"]
    assert failed.status.value == "failed" and "timed out" not in failed.message
    assert "Gadget/cel-health/g: Failed: CELHealthCheck: failed: (has(status.phase)" in failed.message
    [obj] = [o for o in failed.objects if o.kind == "Gadget"]
    assert obj.health == "Failed"
    write_status(staging, phase="Done", conditions=ready("True"))
    done = sync(repo)["gadgets"]
    assert done.status.value == "succeeded", done.message
