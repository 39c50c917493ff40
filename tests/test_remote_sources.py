"""Remote kustomize bases and Helm chart dependencies are refused before the
render (rule render.remote-resource), at any depth of local bases and
components, unless the app sets allowRemoteResources. No network: the "remote"
is an HTTP server on loopback that counts what is asked of it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.source.remote_sources import RULE, is_remote_target, remote_sources
from prefect_gitops.engine.source.render import render_app
from prefect_gitops.engine.spec.appspec import App, RenderMode
from git_remotes import git_base, upstream  # noqa: F401,F811  (fixtures)

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"


class _Counting(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.server.paths.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def remote():
    """An HTTP server on loopback standing for a remote base: its `paths` are what was fetched."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def app(**fields) -> App:
    return App.model_validate({"name": "web", "path": "overlay", "clusters": ["staging"], "namespace": "web",
                               **fields})


def render_problems(root: Path, the_app: App) -> list:
    with pytest.raises(ProblemsFound) as raised:
        render_app(root, the_app, "staging")
    return raised.value.problems


@pytest.mark.parametrize("entry", [
    "https://github.com/kubernetes-sigs/kustomize//examples/multibases?ref=v3.3.1",
    "http://example.com/manifests/deployment.yaml",
    "github.com/org/repo/deploy?ref=v1.2.0",
    "gitlab.com/org/repo//base",
    "git@github.com:org/repo.git//base?ref=main",
    "git::https://git.example.com/org/repo//base",
    "ssh://git@github.com/org/repo.git//base",
    "git.example.com/org/repo//base",
    "../base?ref=main",
])
def test_remote_targets(entry, tmp_path):
    assert is_remote_target(entry, tmp_path)


@pytest.mark.parametrize("entry", ["../base", "base", "./components/probe", "deployment.yaml", "v1.2/extra"])
def test_local_paths(entry, tmp_path):
    (tmp_path / "v1.2" / "extra").mkdir(parents=True)  # a local folder named like a host is still local
    assert not is_remote_target(entry, tmp_path)


def a_remote_two_levels_down(root: Path, url: str) -> Path:
    """overlay -> base (local) -> component (local) -> the remote resource, on line 4."""
    return write(root, {
        "overlay/kustomization.yaml": "resources:\n  - ../base\n",
        "base/kustomization.yaml": "resources:\n  - configmap.yaml\ncomponents:\n  - ../component\n",
        "base/configmap.yaml": CONFIGMAP.format(name="web"),
        "component/kustomization.yaml": ("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
                                         f"resources:\n  - {url}\n"),
    })


def test_a_remote_resource_at_any_depth_is_refused_before_anything_is_fetched(tmp_path, remote):
    url = f"http://127.0.0.1:{remote.server_address[1]}/deployment.yaml"
    root = a_remote_two_levels_down(tmp_path, url)
    [problem] = render_problems(root, app())
    assert (str(problem.source), problem.rule, problem.object_ref) == ("component/kustomization.yaml:4", RULE,
                                                                        "app/web")
    assert url in problem.message and "allowRemoteResources" in problem.message
    assert remote.paths == []  # kustomize never ran


def test_allow_remote_resources_skips_the_check(tmp_path, remote):
    url = f"http://127.0.0.1:{remote.server_address[1]}/deployment.yaml"
    root = a_remote_two_levels_down(tmp_path, url)
    found = render_problems(root, app(allowRemoteResources=True))  # the loopback "remote" answers 404
    assert RULE not in {p.rule for p in found} and {p.rule for p in found} == {"render.kustomize-failed"}
    assert remote.paths == ["/deployment.yaml"]  # this time kustomize went to fetch it


def test_every_remote_entry_is_named_with_its_line(tmp_path):
    root = write(tmp_path, {"overlay/kustomization.yaml": (
        "resources:\n  - github.com/org/repo//base?ref=v1\n  - configmap.yaml\n"
        "bases:\n  - git@github.com:org/other.git\n"
        "components:\n  - https://example.com/org/repo//component\n"),
        "overlay/configmap.yaml": CONFIGMAP.format(name="web")})
    found = remote_sources(root, root / "overlay", RenderMode.KUSTOMIZE)
    assert [str(p.source) for p in found] == ["overlay/kustomization.yaml:2", "overlay/kustomization.yaml:5",
                                              "overlay/kustomization.yaml:7"]
    assert "github.com/org/repo//base?ref=v1" in found[0].message and "bases entry" in found[1].message


def test_a_plain_app_has_nothing_to_fetch(tmp_path):
    root = write(tmp_path, {"overlay/kustomization.yaml": "resources:\n  - https://example.com/x.yaml\n"})
    assert remote_sources(root, root / "overlay", RenderMode.PLAIN) == []


CHART = """apiVersion: v2
name: web
version: 0.1.0
dependencies:
  - name: redis
    version: 18.1.0
    repository: "{repository}"
"""


@pytest.mark.parametrize("repository", ["https://charts.example.com/stable", "oci://registry.example.com/charts",
                                        "@bitnami"])
def test_a_chart_dependency_from_a_repository_is_refused(tmp_path, repository):
    root = write(tmp_path, {"overlay/Chart.yaml": CHART.format(repository=repository),
                            "overlay/templates/cm.yaml": CONFIGMAP.format(name="web")})
    [problem] = render_problems(root, app())
    assert (str(problem.source), problem.rule) == ("overlay/Chart.yaml:7", RULE)
    assert "'redis'" in problem.message and repository in problem.message
    assert RULE not in {p.rule for p in _render_or_problems(root, app(allowRemoteResources=True))}


@pytest.mark.parametrize("vendored", ["charts/redis/Chart.yaml", "charts/redis-18.1.0.tgz"])
def test_a_vendored_chart_dependency_is_local(tmp_path, vendored):
    root = write(tmp_path, {"overlay/Chart.yaml": CHART.format(repository="https://charts.example.com/stable"),
                            f"overlay/{vendored}": "name: redis\n"})
    assert remote_sources(root, root / "overlay", RenderMode.HELM) == []
    write(tmp_path, {"overlay/Chart.yaml": CHART.format(repository="file://../redis")})
    assert remote_sources(root, root / "overlay", RenderMode.HELM) == []


def _render_or_problems(root: Path, the_app: App) -> list:
    """The problems of the render (helm may be missing, or fail on the missing dependency)."""
    try:
        render_app(root, the_app, "staging")
    except ProblemsFound as found:
        return found.problems
    return []


def test_validate_names_the_file_line_and_rule(prefect_api, upstream, tmp_path):
    from prefect_gitops.blocks import GitRepository, KubernetesCluster

    cluster = f"offline-{secrets.token_hex(3)}"  # --offline: never dialled
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "unused"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    KubernetesCluster.from_kubeconfig_file(kubeconfig).save(cluster, overwrite=True)
    upstream.commit({
        "gitops.yaml": f"apps:\n  - name: web\n    path: overlay\n    clusters: [{cluster}]\n    namespace: web\n",
        "overlay/kustomization.yaml": "resources:\n  - configmap.yaml\n  - github.com/org/repo//base?ref=v1\n",
        "overlay/configmap.yaml": CONFIGMAP.format(name="web"),
    }, "a remote base")
    repo = f"remote-sources-{secrets.token_hex(3)}"
    GitRepository(url=f"file://{upstream.bare}", branch="main").save(repo, overwrite=True)
    run = subprocess.run([str(Path(sys.executable).parent / "gitops"), "validate", "--repo", repo, "--offline"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PREFECT_API_URL": prefect_api})
    assert run.returncode == 1, run.stdout + run.stderr
    assert ("error overlay/kustomization.yaml:3: app/web: resources entry 'github.com/org/repo//base?ref=v1' "
            f"is fetched from the network at every render; set the app's allowRemoteResources to allow it [{RULE}]"
            in run.stdout.splitlines()), run.stdout
