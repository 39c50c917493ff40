"""gitops.yaml: a valid spec is understood; every invalid one is reported
with gitops.yaml:LINE, the app and the rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prefect_gitops.engine.objects import Source
from prefect_gitops.engine.problems import ProblemsFound, Severity
from prefect_gitops.engine.spec.appspec import AppSpec, RenderMode, RevertMode, load_appspec, parse_appspec
from prefect_gitops.engine.spec.policy_settings import Enforcement

CLUSTERS = {"staging": {"env": "staging"}, "production": {"env": "prod", "region": "eu"},
            "production-us": {"env": "prod", "region": "us"}}


def spec_text(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


def load(tmp_path: Path, body: str) -> AppSpec:
    (tmp_path / "gitops.yaml").write_text(spec_text(body))
    return load_appspec(tmp_path)


def problems_of(tmp_path: Path, body: str) -> list[tuple[str, int, str]]:
    with pytest.raises(ProblemsFound) as raised:
        load(tmp_path, body)
    return [(p.rule, p.source.line, p.object_ref) for p in raised.value.problems]


FULL = """
apps:
  - name: base
    path: platform/base
    clusterSelector: {}
  - name: web
    path: apps/web/overlays/{cluster}
    render: kustomize
    clusters: [staging]
    clusterSelector:
      matchLabels: {env: prod}
      matchExpressions:
        - {key: region, operator: In, values: [eu]}
    namespace: web
    dependsOn: [base]
    syncPolicy:
      prune: true
      autoRevert: {enabled: true, mode: git}
      healthTimeoutSeconds: 120
    policy:
      allowedRegistries: [registry.example.com]
  - name: chart
    paths: {staging: charts/web, production: charts/web}
    helm:
      valuesFiles: ["values-{cluster}.yaml"]
      values: {replicas: 2}
      releaseName: webapp
    dependsOn: [web]
"""


def test_full_spec(tmp_path):
    spec = load(tmp_path, FULL)
    web = spec.app("web")
    assert web.render is RenderMode.KUSTOMIZE
    assert web.sync_policy.prune and not web.sync_policy.self_heal
    assert web.sync_policy.auto_revert.mode is RevertMode.GIT
    assert web.sync_policy.health_timeout_seconds == 120
    assert web.policy.allowed_registries == ["registry.example.com"]
    assert web.path_for("staging") == "apps/web/overlays/staging"
    assert web.source == Source("gitops.yaml", 5)
    chart = spec.app("chart")
    assert chart.release_name() == "webapp"
    assert chart.values_files_for("production") == ["values-production.yaml"]
    assert chart.path_for("production") == "charts/web"


def test_defaults_are_conservative(tmp_path):
    app = load(tmp_path, "apps: [{name: a, path: a, clusters: [staging]}]").apps[0]
    assert app.render is RenderMode.AUTO and app.namespace == "default"
    policy = app.sync_policy
    assert (policy.prune, policy.self_heal, policy.allow_empty, policy.auto_revert.enabled) == (
        False, False, False, False)


def test_targets_by_name_labels_and_paths(tmp_path):
    spec = load(tmp_path, FULL)
    assert [(a.name, c) for a, c in spec.targets(CLUSTERS)] == [
        ("base", "production"), ("base", "production-us"), ("base", "staging"),
        ("web", "production"), ("web", "staging"),
        ("chart", "production"), ("chart", "staging"),
    ]


def test_unknown_clusters_are_warnings(tmp_path):
    spec = load(tmp_path, FULL)
    problems = spec.target_problems({"staging": {}})
    assert {(p.object_ref, p.severity) for p in problems} == {("app/chart", Severity.WARNING)}
    assert [a.name for a, _ in spec.targets({"staging": {}})] == ["base", "web", "chart"]


def test_ordered_apps_is_topological_and_stable(tmp_path):
    spec = load(tmp_path, """
        apps:
          - {name: z, path: z, clusters: [a], dependsOn: [m]}
          - {name: m, path: m, clusters: [a]}
          - {name: b, path: b, clusters: [a]}
          - {name: c, path: c, clusters: [a], dependsOn: [b, m]}
    """)
    assert [a.name for a in spec.ordered_apps()] == ["b", "m", "c", "z"]


def test_invalid_fields_name_their_line_and_app(tmp_path):
    problems = problems_of(tmp_path, """
        apps:
          - name: web
            path: apps/web
            clusters: [staging]
            syncPolicy:
              prune: maybe
              retries: 3
          - name: Not_A_Label
            path: apps/{clustr}
            clusters: [staging]
    """)
    assert problems == [
        ("appspec.invalid", 6, "app/web"),
        ("appspec.invalid", 7, "app/web"),
        ("appspec.invalid", 8, "app/Not_A_Label"),
        ("appspec.invalid", 9, "app/Not_A_Label"),
    ]


def test_messages_say_what_is_wrong(tmp_path):
    with pytest.raises(ProblemsFound) as raised:
        load(tmp_path, """
            apps:
              - name: web
                path: a
                paths: {staging: b}
              - name: api
                path: a
              - name: chart
                path: c
                clusters: [x]
                render: plain
                helm: {releaseName: r}
        """)
    text = str(raised.value)
    assert "gitops.yaml:2: app/web: set exactly one of path and paths [appspec.invalid]" in text
    assert "gitops.yaml:5: app/api: no clusters" in text
    assert "gitops.yaml:7: app/chart: helm settings given but render is plain" in text


def test_unknown_top_level_field(tmp_path):
    assert problems_of(tmp_path, "apps: []\nclusters: {}\n") == [("appspec.invalid", 2, "")]


def test_duplicate_app(tmp_path):
    problems = problems_of(tmp_path, """
        apps:
          - {name: web, path: a, clusters: [x]}
          - {name: api, path: b, clusters: [x]}
          - {name: web, path: c, clusters: [x]}
    """)
    assert problems == [("appspec.duplicate-app", 4, "app/web")]


def test_unknown_dependency_names_the_dependsOn_line(tmp_path):
    problems = problems_of(tmp_path, """
        apps:
          - name: web
            path: a
            clusters: [x]
            dependsOn:
              - base
    """)
    assert problems == [("appspec.unknown-dependency", 6, "app/web")]


def test_dependency_cycle(tmp_path):
    with pytest.raises(ProblemsFound) as raised:
        load(tmp_path, """
            apps:
              - {name: a, path: a, clusters: [x], dependsOn: [c]}
              - {name: b, path: b, clusters: [x], dependsOn: [a]}
              - {name: c, path: c, clusters: [x], dependsOn: [b]}
              - {name: d, path: d, clusters: [x], dependsOn: [d]}
              - {name: e, path: e, clusters: [x], dependsOn: [a]}
        """)
    problems = raised.value.problems
    assert [(p.rule, p.source.line, p.message) for p in problems] == [
        ("appspec.dependency-cycle", 2, "dependency cycle: a -> c -> b -> a"),
        ("appspec.dependency-cycle", 5, "dependency cycle: d -> d"),
    ]


def test_one_bad_app_does_not_hide_relation_problems(tmp_path):
    problems = problems_of(tmp_path, """
        apps:
          - {name: web, path: a, clusters: [x], dependsOn: [nope], bogus: 1}
          - {name: api, path: b, clusters: [x], dependsOn: [web]}
    """)
    assert [rule for rule, _, _ in problems] == ["appspec.invalid"]  # api's dependency on web is fine
    problems = problems_of(tmp_path, """
        apps:
          - {name: web, path: a, clusters: [x], bogus: 1}
          - {name: api, path: b, clusters: [x], dependsOn: [nope]}
    """)
    assert [rule for rule, _, _ in problems] == ["appspec.invalid", "appspec.unknown-dependency"]


def test_paths_must_cover_named_clusters(tmp_path):
    problems = problems_of(tmp_path, "apps: [{name: a, paths: {staging: x}, clusters: [staging, prod]}]")
    assert problems == [("appspec.invalid", 1, "app/a")]


def test_yaml_problems_in_the_spec(tmp_path):
    problems = problems_of(tmp_path, "apps:\n  - name: a\n    name: b\n")
    assert problems == [("yaml.duplicate-key", 3, "")]
    problems = problems_of(tmp_path, "apps: [\n")
    assert problems[0][0] == "yaml.syntax"


def test_missing_spec(tmp_path):
    with pytest.raises(ProblemsFound) as raised:
        load_appspec(tmp_path)
    assert raised.value.problems[0].rule == "appspec.missing"


def test_spec_that_is_not_a_mapping(tmp_path):
    assert problems_of(tmp_path, "- a\n- b\n")[0][:2] == ("appspec.invalid", 1)


def test_parse_appspec_from_text():
    assert parse_appspec("apps: []").apps == []


@pytest.mark.parametrize("written", ["off", "Off", "OFF", "no", "false", "'off'"])
def test_resource_limits_off_as_yaml_means_it(tmp_path, written):
    [app] = load(tmp_path, f"""
        apps:
          - name: web
            path: apps/web
            clusterSelector: {{}}
            policy: {{resourceLimits: {written}}}
        """).apps
    assert app.policy.resource_limits is Enforcement.OFF


def test_yaml_boolean_words_stay_words_where_words_are_allowed(tmp_path):
    [app] = load(tmp_path, """
        apps:
          - name: web
            path: apps/web
            clusterSelector:
              matchLabels: {canary: on}
              matchExpressions: [{key: tier, operator: In, values: [yes, "no"]}]
            syncPolicy: {prune: yes, selfHeal: off}
            helm: {values: {enabled: yes}}
        """).apps
    assert app.cluster_selector.match_labels == {"canary": "on"}
    assert app.cluster_selector.match_expressions[0].values == ["yes", "no"]
    assert app.sync_policy.prune is True and app.sync_policy.self_heal is False
    assert app.helm.values == {"enabled": True}  # Helm reads YAML 1.1 too


def test_resource_limits_true_is_refused(tmp_path):
    body = """
        apps:
          - name: web
            path: apps/web
            clusterSelector: {}
            policy: {resourceLimits: on}
        """
    assert problems_of(tmp_path, body) == [("appspec.invalid", 5, "app/web")]
