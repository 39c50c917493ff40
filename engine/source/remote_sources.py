"""Remote sources refused before rendering (rule `render.remote-resource`).

A kustomization that names a remote base, resource or component (kustomize's
remote targets: `https://github.com/org/repo//path?ref=v1`, `git@host:org/repo`,
`github.com/org/repo`, `ssh://...`, `git::...`), at any depth of its local
bases and components, or a Helm chart that depends on a chart from a
repository (`https://...`, `oci://...`, `@alias`) which is not vendored in its
charts/ folder, would make every render fetch content from the network: not
pinned by the GitOps repository's commit, and at sync time. Each is a problem
naming the file, the line and the entry; nothing is fetched. An app allows them
with `allowRemoteResources: true`."""

from __future__ import annotations

import re
from pathlib import Path

from prefect_gitops.engine.objects import Source
from prefect_gitops.engine.problems import Problem, ProblemsFound
from prefect_gitops.engine.source.manifests import (Document, kustomization_file, parse_documents, read_text,
                                                    relative_name)
from prefect_gitops.engine.spec.appspec import App, RenderMode

RULE = "render.remote-resource"
# The entries of a kustomization that kustomize loads as paths or remote targets.
KUSTOMIZE_KEYS = ("resources", "bases", "components", "crds", "generators", "transformers", "validators")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # https://, http://, ssh://, git://, file://
_REMOTE_PREFIX = re.compile(r"^(git::|[\w.-]+@[\w.-]+:|(github\.com|gitlab\.com|bitbucket\.org)/)")
_REMOTE_QUERY = re.compile(r"\?(.*&)?(ref|version|submodules|timeout)=")
_HOST_LIKE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?/")  # example.com/org/repo
_CHART_REPOSITORY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://|@)")


def refuse_remote_sources(root: Path, directory: Path, app: App, mode: RenderMode) -> None:
    """Raises ProblemsFound naming every remote source of the app's render,
    unless the app allows them. Reads files only: nothing is fetched."""
    if app.allow_remote_resources or mode is RenderMode.PLAIN:
        return
    problems = remote_sources(root, directory, mode, app.ref)
    if problems:
        raise ProblemsFound(problems)


def remote_sources(root: Path, directory: Path, mode: RenderMode, ref: str = "") -> list[Problem]:
    """The remote sources of a kustomization tree, or of a Helm chart's dependencies."""
    root, directory = root.resolve(), directory.resolve()
    if mode is RenderMode.HELM:
        return chart_dependencies(root, directory, ref)
    return _Kustomizations(root, ref).visit(directory) if mode is RenderMode.KUSTOMIZE else []


def is_remote_target(entry: str, directory: Path) -> bool:
    """Whether kustomize would fetch this entry rather than read a local path."""
    if _URL.match(entry) or _REMOTE_PREFIX.match(entry) or _REMOTE_QUERY.search(entry):
        return True
    return bool(_HOST_LIKE.match(entry)) and not (directory / entry).exists()


class _Kustomizations:
    """A kustomization and the local ones it names, each read once."""

    def __init__(self, root: Path, ref: str):
        self.root, self.ref = root, ref
        self.seen: set[Path] = set()

    def visit(self, directory: Path) -> list[Problem]:
        if directory in self.seen or not _inside(directory, self.root):
            return []  # a path leaving the repository is refused by the render itself
        self.seen.add(directory)
        found = _first_document(kustomization_file(directory), self.root)
        if found is None:
            return []
        rel, document = found
        problems = []
        for key in KUSTOMIZE_KEYS:
            entries = document.value.get(key)
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                if not isinstance(entry, str):
                    continue  # inline generator or transformer configuration
                if is_remote_target(entry, directory):
                    problems.append(_problem(Source(rel, document.line_of((key, index))), self.ref,
                                             f"{key} entry {entry!r} is fetched from the network at every render"))
                elif (directory / entry).is_dir():
                    problems += self.visit((directory / entry).resolve())
        return problems


def chart_dependencies(root: Path, chart: Path, ref: str = "") -> list[Problem]:
    """Chart.yaml's dependencies from a repository that charts/ does not hold."""
    found = _first_document(chart / "Chart.yaml", root)
    if found is None:
        return []
    rel, document = found
    dependencies = document.value.get("dependencies")
    problems = []
    for index, dependency in enumerate(dependencies if isinstance(dependencies, list) else []):
        if not isinstance(dependency, dict):
            continue
        repository, name = str(dependency.get("repository") or ""), str(dependency.get("name") or "")
        if _CHART_REPOSITORY.match(repository) and not repository.startswith("file://") \
                and not _vendored(chart, name):
            problems.append(_problem(Source(rel, document.line_of(("dependencies", index, "repository"))), ref,
                                     f"dependency {name!r} comes from {repository} and is not vendored in "
                                     "charts/ (helm dependency build, then commit charts/)"))
    return problems


def _vendored(chart: Path, name: str) -> bool:
    charts = chart / "charts"
    return bool(name) and ((charts / name / "Chart.yaml").is_file() or any(charts.glob(f"{name}-*.tgz")))


def _first_document(file: Path | None, root: Path) -> tuple[str, Document] | None:
    """The file's first YAML document when it is a mapping; problems with the
    file itself are the render's to report."""
    if file is None or not file.is_file():
        return None
    rel = relative_name(file, root)
    text, _ = read_text(file, rel)
    documents, _ = parse_documents(text or "", rel, track_positions=True)
    if not documents or not isinstance(documents[0].value, dict):
        return None
    return rel, documents[0]


def _problem(source: Source, ref: str, message: str) -> Problem:
    return Problem(source, ref, RULE, f"{message}; set the app's allowRemoteResources to allow it")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
