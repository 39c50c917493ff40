"""Render: real folders, real `kubectl kustomize`, real `helm template`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prefect_gitops.engine.objects import Source
from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.source.render import RenderOptions, default_namespaces, find_helm, render_app
from prefect_gitops.engine.spec.appspec import App

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: main, image: "nginx:1.27"}}]
"""
SERVICE = "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports: [{{port: 80}}]\n"
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"


def write(root: Path, rel: str, content: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(content))
    return path


def app(path: str = "apps/web", **fields) -> App:
    return App.model_validate({"name": "web", "path": path, "clusters": ["staging", "production"],
                               "namespace": "web", **fields})


def problems(repo: Path, the_app: App, cluster: str = "staging", **options) -> list:
    with pytest.raises(ProblemsFound) as raised:
        render_app(repo, the_app, cluster, RenderOptions(**options))
    return raised.value.problems


def rules(found: list) -> list[tuple[str, str]]:
    return [(p.rule, str(p.source)) for p in found]


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


# -- plain -------------------------------------------------------------------------------

def test_plain_walk_is_recursive_sorted_and_filtered(repo):
    write(repo, "apps/web/b.yaml", DEPLOYMENT.format(name="b") + "---\n" + SERVICE.format(name="b"))
    write(repo, "apps/web/a/svc.yml", SERVICE.format(name="a"))
    write(repo, "apps/web/ns.json", '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}')
    write(repo, "apps/web/README.md", "# not a manifest: kind: Foo")
    write(repo, "apps/web/.hidden/x.yaml", SERVICE.format(name="hidden"))
    write(repo, "apps/web/notes.txt", "x: 1")
    manifests = render_app(repo, app(), "staging")
    assert [(m.ref, str(m.source)) for m in manifests] == [
        ("Service/web/a", "apps/web/a/svc.yml:1"),
        ("Deployment/web/b", "apps/web/b.yaml:1"),
        ("Service/web/b", "apps/web/b.yaml:12"),
        ("Namespace/web", "apps/web/ns.json:1"),
    ]


def test_path_per_cluster(repo):
    write(repo, "apps/web/staging/d.yaml", DEPLOYMENT.format(name="s"))
    write(repo, "apps/web/production/d.yaml", DEPLOYMENT.format(name="p"))
    assert [m.name for m in render_app(repo, app("apps/web/{cluster}"), "production")] == ["p"]
    paths = App.model_validate({"name": "web", "paths": {"staging": "apps/web/staging"}})
    assert [m.name for m in render_app(repo, paths, "staging")] == ["s"]
    assert rules(problems(repo, paths, "production"))[0][0] == "path.missing"


def test_namespaces_default_except_cluster_scoped(repo):
    write(repo, "apps/web/all.yaml", """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: plain}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: elsewhere, namespace: other}
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRole
        metadata: {name: reader}
        ---
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: widgets.example.com}
        spec:
          group: example.com
          scope: Cluster
          names: {kind: Widget, plural: widgets}
        ---
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w}
        ---
        apiVersion: other.example.com/v1
        kind: Gadget
        metadata: {name: g}
        """)
    namespaces = {m.name: m.namespace for m in render_app(repo, app(), "staging")}
    assert namespaces == {"plain": "web", "elsewhere": "other", "reader": "",
                          "widgets.example.com": "", "w": "", "g": "web"}


def test_all_problems_of_an_app_are_raised_together(repo):
    write(repo, "apps/web/ok.yaml", SERVICE.format(name="ok"))
    write(repo, "apps/web/dup.yaml", "kind: Service\nmetadata:\n  name: a\n  name: b\n")
    write(repo, "apps/web/sub/broken.yaml", "kind: [\n")
    (repo / "apps/web/latin1.yaml").write_bytes(b"kind: ConfigMap\ndata: {x: \xe9}\n")
    found = problems(repo, app())
    assert rules(found) == [("yaml.duplicate-key", "apps/web/dup.yaml:4"),
                            ("file.not-utf8", "apps/web/latin1.yaml:2"),
                            ("yaml.syntax", "apps/web/sub/broken.yaml:2")]


def test_empty_render_is_refused_unless_allowed(repo):
    write(repo, "apps/web/README.md", "nothing here")
    assert rules(problems(repo, app())) == [("render.empty", "gitops.yaml")]
    allowed = app(syncPolicy={"allowEmpty": True})
    assert render_app(repo, allowed, "staging") == []


# -- path safety -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../outside", "apps/../../outside", "/etc", "~/x"])
def test_paths_leaving_the_repository(repo, path):
    (repo.parent / "outside").mkdir(exist_ok=True)
    write(repo.parent, "outside/secret.yaml", SERVICE.format(name="secret"))
    found = problems(repo, app(path))
    assert [p.rule for p in found] == ["path.outside-repo"]
    assert found[0].object_ref == "app/web" and path in found[0].message


def test_symlinked_app_dir_leaving_the_repository(repo):
    write(repo.parent, "outside/secret.yaml", SERVICE.format(name="secret"))
    (repo / "apps").mkdir()
    (repo / "apps/web").symlink_to(repo.parent / "outside")
    assert [p.rule for p in problems(repo, app())] == ["path.outside-repo"]


def test_symlinks_inside_the_app_leaving_the_repository(repo):
    write(repo.parent, "outside/secret.yaml", SERVICE.format(name="secret"))
    write(repo, "apps/web/ok.yaml", SERVICE.format(name="ok"))
    (repo / "apps/web/secret.yaml").symlink_to(repo.parent / "outside/secret.yaml")
    (repo / "apps/web/dir").symlink_to(repo.parent / "outside")
    assert rules(problems(repo, app())) == [("path.outside-repo", "apps/web/dir"),
                                            ("path.outside-repo", "apps/web/secret.yaml")]


def test_symlinks_inside_the_repository_are_followed(repo):
    write(repo, "shared/svc.yaml", SERVICE.format(name="shared"))
    write(repo, "apps/web/ok.yaml", SERVICE.format(name="ok"))
    (repo / "apps/web/shared").symlink_to(repo / "shared")
    (repo / "apps/web/loop").symlink_to(repo / "apps/web")  # must not recurse forever
    assert [m.name for m in render_app(repo, app(), "staging")] == ["ok", "shared"]


def test_missing_path(repo):
    found = problems(repo, app("apps/nothing-here"))
    assert rules(found) == [("path.missing", "gitops.yaml")]
    assert "apps/nothing-here" in found[0].message


# -- kustomize ---------------------------------------------------------------------------

def kustomize_repo(repo: Path) -> None:
    write(repo, "apps/web/base/deploy.yaml", DEPLOYMENT.format(name="web") + "---\n" + SERVICE.format(name="web"))
    write(repo, "apps/web/base/kustomization.yaml", "resources:\n  - deploy.yaml\n")
    write(repo, "apps/web/overlays/staging/ns.yaml", NAMESPACE.format(name="web-staging"))
    write(repo, "apps/web/overlays/staging/kustomization.yaml", """\
        namePrefix: stg-
        resources:
          - ns.yaml
          - ../../base
        configMapGenerator:
          - name: settings
            literals: [mode=staging]
        """)


def test_kustomize_with_sources(repo):
    kustomize_repo(repo)
    manifests = render_app(repo, app("apps/web/overlays/{cluster}"), "staging")
    found = {m.ref: str(m.source) for m in manifests}
    assert found.pop("Namespace/web-staging") == "apps/web/overlays/staging/ns.yaml:1"
    assert found.pop("Deployment/web/stg-web") == "apps/web/base/deploy.yaml:1"
    assert found.pop("Service/web/stg-web") == "apps/web/base/deploy.yaml:12"
    (configmap, source), = found.items()
    assert configmap.startswith("ConfigMap/web/stg-settings-")
    assert source == "apps/web/overlays/staging/kustomization.yaml:6"


def test_kustomize_order_is_stable(repo):
    kustomize_repo(repo)
    the_app = app("apps/web/overlays/{cluster}")
    first = [m.ref for m in render_app(repo, the_app, "staging")]
    assert first == [m.ref for m in render_app(repo, the_app, "staging")]


def test_failing_kustomization(repo):
    write(repo, "apps/web/kustomization.yaml", "resources:\n  - missing.yaml\n")
    found = problems(repo, app())
    assert rules(found) == [("render.kustomize-failed", "apps/web/kustomization.yaml")]
    assert "missing.yaml" in found[0].message


def test_kustomize_resource_outside_the_repository(repo):
    write(repo.parent, "outside/kustomization.yaml", "resources: [svc.yaml]\n")
    write(repo.parent, "outside/svc.yaml", SERVICE.format(name="secret"))
    write(repo, "apps/web/kustomization.yaml", "resources:\n  - ../../../outside\n")
    assert rules(problems(repo, app())) == [("path.outside-repo", "apps/web/kustomization.yaml:2")]


def test_kustomize_forced_on_a_plain_folder_fails_clearly(repo):
    write(repo, "apps/web/svc.yaml", SERVICE.format(name="a"))
    assert [p.rule for p in problems(repo, app(render="kustomize"))] == ["render.kustomize-failed"]


# -- helm --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def helm() -> str:
    found = find_helm()
    if found is None:
        pytest.skip("helm is not installed: run scripts/install-helm.sh")
    return found


def chart_repo(repo: Path) -> None:
    write(repo, "charts/web/Chart.yaml", "apiVersion: v2\nname: webchart\nversion: 0.1.0\n")
    write(repo, "charts/web/values.yaml", "replicas: 1\nimage: nginx:1.27\n")
    write(repo, "charts/web/values-staging.yaml", "replicas: 2\n")
    write(repo, "charts/web/values-production.yaml", "replicas: 5\n")
    write(repo, "charts/web/templates/deployment.yaml", """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {{ .Release.Name }}
        spec:
          replicas: {{ .Values.replicas }}
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers: [{name: web, image: {{ .Values.image | quote }}}]
        """)
    write(repo, "charts/web/templates/service.yaml", SERVICE.format(name="{{ .Release.Name }}"))
    write(repo, "charts/web/templates/tests/test-pod.yaml",
          "apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n")


def helm_app(**helm_fields) -> App:
    return app("charts/web", helm={"valuesFiles": ["values-{cluster}.yaml"], **helm_fields})


def test_helm_with_values_per_cluster(repo, helm):
    chart_repo(repo)
    manifests = render_app(repo, helm_app(values={"image": "nginx:1.28"}), "production")
    by_ref = {m.ref: m for m in manifests}
    assert set(by_ref) == {"Deployment/web/web", "Service/web/web"}  # no test pods
    deployment = by_ref["Deployment/web/web"]
    assert deployment.obj["spec"]["replicas"] == 5
    assert deployment.obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert deployment.source == Source("charts/web/templates/deployment.yaml", 2)
    assert by_ref["Service/web/web"].source == Source("charts/web/templates/service.yaml", 2)


def test_helm_release_name(repo, helm):
    chart_repo(repo)
    manifests = render_app(repo, helm_app(releaseName="site"), "staging")
    assert sorted(m.name for m in manifests) == ["site", "site"]


def test_failing_chart(repo, helm):
    chart_repo(repo)
    write(repo, "charts/web/templates/broken.yaml", "kind: {{ .Values.missing.deeper }}\n")
    found = problems(repo, helm_app())
    assert rules(found) == [("render.helm-failed", "charts/web/templates/broken.yaml:1")]
    assert "nil pointer" in found[0].message or "missing" in found[0].message


def test_missing_values_file(repo, helm):
    chart_repo(repo)
    found = problems(repo, helm_app(), "qa")
    assert [p.rule for p in found] == ["path.missing"]
    assert "charts/web/values-qa.yaml" in found[0].message


def test_values_file_outside_the_repository(repo, helm):
    chart_repo(repo)
    write(repo.parent, "stolen.yaml", "replicas: 1\n")
    found = problems(repo, app("charts/web", helm={"valuesFiles": ["../../../stolen.yaml"]}))
    assert [p.rule for p in found] == ["path.outside-repo"]


def test_helm_missing_says_so(repo, tmp_path):
    chart_repo(repo)
    empty = tmp_path / "no-tools"
    empty.mkdir()
    assert find_helm(str(empty)) is None
    found = problems(repo, helm_app(), tool_path=str(empty))
    assert [p.rule for p in found] == ["render.helm-missing"]
    assert found[0].message.startswith("helm is not installed")


# -- the Prefect task --------------------------------------------------------------------

def test_the_render_stage_wraps_the_function_and_fills_the_cache(repo, tmp_path, monkeypatch):
    from prefect.logging import disable_run_logger

    from prefect_gitops.engine.source import render_cache
    from prefect_gitops.tasks.render import render_target

    monkeypatch.setenv("GITOPS_HOME", str(tmp_path / "home"))
    write(repo, "apps/web/svc.yaml", SERVICE.format(name="a"))
    with disable_run_logger():
        assert [m.ref for m in render_target.fn(repo, app(), "staging", "a" * 40)] == ["Service/web/a"]
    assert [m.ref for m in render_cache.load("a" * 40, app(), "staging")] == ["Service/web/a"]
    assert render_target.name == "render"


def test_default_namespaces_leaves_objects_without_metadata_alone():
    from prefect_gitops.engine.objects import Manifest
    manifest = Manifest({"kind": "ConfigMap"})
    default_namespaces([manifest], "web")
    assert manifest.obj == {"kind": "ConfigMap"}


@pytest.mark.parametrize("text", [
    DEPLOYMENT.format(name="a") + "---\n" + SERVICE.format(name="b"),
    "# leading comment\n\n---\n# doc comment\n" + SERVICE.format(name="c")
    + "...\n---\n---\n" + NAMESPACE.format(name="n"),
    "kind: ConfigMap\nmetadata:\n  labels:\n    name: not-this\n  name: this   # comment\ndata: {}\n",
    "apiVersion: v1\nkind: 'Secret'\nmetadata:\n    namespace: x\n    name: \"quoted\"\n",
])
def test_scan_objects_agrees_with_the_loader(text):
    from prefect_gitops.engine.source.manifests import load_text
    from prefect_gitops.engine.source.render import scan_objects
    assert scan_objects(text) == [(m.kind, m.name, m.source.line) for m in load_text(text, "x").manifests]


@pytest.mark.parametrize("text", [
    '{"kind": "ConfigMap", "metadata": {"name": "json"}}',
    "kind: ConfigMap\nmetadata: {name: flow}\n",
    "kind: List\nitems: []\n",
    "--- {kind: ConfigMap, metadata: {name: x}}\n",
    "kind: ConfigMap\nmetadata:\n  name: Not-A-DNS-Name\n",
])
def test_scan_objects_leaves_what_it_cannot_read_to_the_parser(text):
    from prefect_gitops.engine.source.render import scan_objects
    assert scan_objects(text) is None


def test_kustomize_sources_of_json_and_flow_style_resources(repo):
    write(repo, "apps/web/cm.json", '{"apiVersion": "v1", "kind": "ConfigMap",\n "metadata": {"name": "j"}}\n')
    write(repo, "apps/web/svc.yaml",
          "apiVersion: v1\nkind: Service\nmetadata: {name: flow}\nspec: {ports: [{port: 80}]}\n")
    write(repo, "apps/web/kustomization.yaml", "resources: [cm.json, svc.yaml]\n")
    sources = {m.ref: str(m.source) for m in render_app(repo, app(), "staging")}
    assert sources == {"ConfigMap/web/j": "apps/web/cm.json:1", "Service/web/flow": "apps/web/svc.yaml:1"}


def test_problems_about_the_app_name_its_line_in_gitops_yaml(repo):
    from prefect_gitops.engine.spec.appspec import load_appspec
    write(repo, "gitops.yaml", """\
        apps:
          - name: ok
            path: apps/ok
            clusters: [staging]
          - name: web
            path: ../elsewhere
            clusters: [staging]
        """)
    spec = load_appspec(repo)
    with pytest.raises(ProblemsFound) as raised:
        render_app(repo, spec.app("web"), "staging")
    assert str(raised.value.problems[0]).startswith("gitops.yaml:5: app/web: path '../elsewhere' leaves")
