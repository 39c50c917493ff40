"""Loading manifest files (YAML or JSON) safely into `Manifest`s.

libyaml parses (fast, in C) into nodes that carry line numbers; we build the
Python values from those nodes ourselves, so that every document and list item
keeps its line, a duplicate key is an error instead of a silent overwrite, and
alias expansion is counted against a budget (a "billion laughs" file is refused
after a bounded amount of work instead of eating all memory).
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.problems import Problem

MAX_FILE_BYTES = 4 * 1024 * 1024
# Nodes one file may expand to, counting every alias use; far above any real
# manifest file (4 MiB of YAML is well under a million nodes without aliases).
MAX_NODES = 1_000_000
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

_BaseLoader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
_RESOLVED: dict[str, str] = {}  # plain scalar -> tag; manifests repeat the same keys and values


class _Loader(_BaseLoader):
    """libyaml's loader with the (Python) tag resolution of plain scalars cached:
    it is most of the time spent composing Kubernetes YAML."""

    def resolve(self, kind, value, implicit):
        if kind is not ScalarNode or not implicit[0] or len(value) > 64:
            return super().resolve(kind, value, implicit)
        tag = _RESOLVED.get(value)
        if tag is None:
            if len(_RESOLVED) > 100_000:
                _RESOLVED.clear()
            tag = _RESOLVED[value] = super().resolve(kind, value, implicit)
        return tag


@contextmanager
def _gc_paused():
    """Parsing allocates many objects that mostly stay alive: cyclic GC passes
    over them mid-parse find nothing to free (they cost a fifth of the parse);
    the node budget bounds memory meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# Scalar constructors of PyYAML's safe schema (YAML 1.1, as Kubernetes' own
# parser reads it); timestamps and binaries stay strings, as in Kubernetes.
_SAFE = yaml.constructor.SafeConstructor()
_TAG = "tag:yaml.org,2002:"
_SCALARS = {
    _TAG + "str": lambda n: n.value,
    _TAG + "null": lambda n: None,
    _TAG + "bool": _SAFE.construct_yaml_bool,
    _TAG + "int": _SAFE.construct_yaml_int,
    _TAG + "float": _SAFE.construct_yaml_float,
    _TAG + "timestamp": lambda n: n.value,
    _TAG + "binary": lambda n: n.value,
}
_STR, _SEQ, _MAP, _MERGE = _TAG + "str", _TAG + "seq", _TAG + "map", _TAG + "merge"


@dataclass
class Document:
    """One YAML document: its value, the line it starts on, and (on request)
    the line of every path inside it, e.g. ("apps", 0, "name") -> 3."""

    value: Any
    line: int
    positions: dict[tuple, int] = field(default_factory=dict)
    node: Node | None = field(default=None, repr=False)

    def line_of(self, path: Iterable) -> int:
        """The line of the longest known prefix of `path`."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, self.line)


@dataclass
class Loaded:
    """What loading produced: manifests, and every problem found on the way."""

    manifests: list[Manifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def extend(self, other: Loaded) -> None:
        self.manifests.extend(other.manifests)
        self.problems.extend(other.problems)


class _Refused(Exception):
    """A document that cannot be built; carries the problem's rule and node."""

    def __init__(self, rule: str, message: str, node: Node):
        super().__init__(message)
        self.rule, self.message, self.node = rule, message, node


class _Builder:
    """Builds Python values from composed nodes, one file's worth.

    Nodes are built afresh at every alias use (no shared sub-objects, which
    callers may mutate), and every build counts against the file's budget."""

    def __init__(self, path: str, max_nodes: int, track: bool):
        self.path = path
        self.max_nodes = max_nodes
        self.budget = max_nodes
        self.active: set[int] = set()  # nodes being built: an alias to one is a cycle
        self.positions: dict[tuple, int] | None = {} if track else None
        self.duplicates: list[Problem] = []

    def build(self, node: Node, path: tuple = ()) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _Refused("yaml.alias-bomb", "document expands to more than "
                           f"{self.max_nodes:,} nodes (nested aliases?)", node)
        if self.positions is not None:
            self.positions.setdefault(path, node.start_mark.line + 1)
        if node.__class__ is ScalarNode:
            return node.value if node.tag == _STR else self._scalar(node)  # strings: most nodes
        if id(node) in self.active:
            raise _Refused("yaml.recursive-alias", "an alias refers to a node containing itself", node)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode) and node.tag == _SEQ:
                return self._sequence(node, path)
            if isinstance(node, MappingNode) and node.tag == _MAP:
                return self._mapping(node, path)
            raise _Refused("yaml.unknown-tag", f"unsupported tag {node.tag!r}", node)
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: ScalarNode) -> Any:
        construct = _SCALARS.get(node.tag)
        if construct is None:
            raise _Refused("yaml.unknown-tag", f"unsupported tag {node.tag!r}", node)
        return construct(node)

    def _sequence(self, node: SequenceNode, path: tuple) -> list:
        if self.positions is None:
            return [self.build(child) for child in node.value]
        return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]

    def _mapping(self, node: MappingNode, path: tuple) -> dict:
        result: dict = {}
        key_nodes: dict = {}  # key -> its node, for the line of a duplicate's original
        merges: list[Node] = []
        tracking = self.positions is not None
        for key_node, value_node in node.value:
            if key_node.tag == _STR and key_node.__class__ is ScalarNode:
                key = key_node.value
            elif key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            else:
                key = self._key(key_node)
            if key in result:
                self._duplicate(key, key_node, key_nodes[key])
                continue
            key_nodes[key] = key_node
            if tracking:
                self.positions[path + (key,)] = key_node.start_mark.line + 1
                result[key] = self.build(value_node, path + (key,))
            else:
                result[key] = self.build(value_node)
        for merged in merges:  # `<<: *base`: explicit keys win, as YAML 1.1 says
            for key, value in self._merge_source(merged, path).items():
                result.setdefault(key, value)
        return result

    def _merge_source(self, node: Node, path: tuple) -> dict:
        value = self.build(node, path)
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(s, dict) for s in sources):
            raise _Refused("yaml.syntax", "`<<` must merge a mapping or a list of mappings", node)
        merged: dict = {}
        for source in reversed(sources):  # earlier mappings in the list win
            merged.update(source)
        return merged

    def _key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise _Refused("yaml.syntax", "a mapping key must be a scalar", node)
        # Kubernetes reads YAML into JSON, whose keys are strings: `80: x` is "80".
        value = self._scalar(node)
        return value if isinstance(value, str) else node.value

    def _duplicate(self, key: str, node: Node, first: Node) -> None:
        self.duplicates.append(Problem(
            Source(self.path, node.start_mark.line + 1), "", "yaml.duplicate-key",
            f"duplicate key {key!r} (first defined on line {first.start_mark.line + 1})"))


def _syntax_problem(path: str, text: str, error: yaml.YAMLError) -> Problem:
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML forbids
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        char = error.character if isinstance(error.character, int) else ord(error.character)
        return Problem(Source(path, line), "", "yaml.syntax",
                       f"character #x{char:04x} at line {line}, column {column}: {error.reason}")
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return Problem(Source(path), "", "yaml.syntax", str(error))
    message = f"{error.problem or 'invalid YAML'} at line {mark.line + 1}, column {mark.column + 1}"
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark is not None:
        message += f" ({context} started at line {context_mark.line + 1})"
    elif context:
        message += f" ({context})"
    return Problem(Source(path, mark.line + 1), "", "yaml.syntax", message)


def parse_documents(text: str, path: str, *, max_nodes: int = MAX_NODES,
                    track_positions: bool = False) -> tuple[list[Document], list[Problem]]:
    """Every non-empty document of a YAML (or JSON) text, with problems found.

    Documents before a syntax error are kept; a document with a duplicate key,
    or one refused for its size or tags, is left out."""
    builder = _Builder(path, max_nodes, track_positions)
    documents: list[Document] = []
    problems: list[Problem] = []
    with _gc_paused():
        try:
            for node in yaml.compose_all(text, Loader=_Loader):
                document = _build_document(builder, node, path, problems)
                if document is not None and document.value is not None:
                    documents.append(document)
                if builder.budget < 0:
                    break  # the file's budget is spent: later documents would be refused too
        except yaml.YAMLError as error:
            problems.append(_syntax_problem(path, text, error))
        except RecursionError:
            problems.append(Problem(Source(path), "", "yaml.too-deep", "YAML nested too deeply"))
    return documents, problems


def _build_document(builder: _Builder, node: Node, path: str,
                    problems: list[Problem]) -> Document | None:
    if builder.positions is not None:
        builder.positions = {}
    duplicates_before = len(builder.duplicates)
    line = node.start_mark.line + 1
    try:
        value = builder.build(node)
    except _Refused as refused:
        problems.append(Problem(Source(path, refused.node.start_mark.line + 1), "", refused.rule,
                                refused.message))
        return None
    except RecursionError:
        problems.append(Problem(Source(path, line), "", "yaml.too-deep", "YAML nested too deeply"))
        return None
    if len(builder.duplicates) > duplicates_before:
        problems.extend(builder.duplicates[duplicates_before:])
        return None
    return Document(value, line, builder.positions or {}, node)


def _is_list(value: dict) -> bool:
    kind = value.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and isinstance(value.get("items"), list)


def _item_lines(document: Document) -> list[int]:
    """The line of each item of a `List` document, read from its nodes."""
    count = len(document.value["items"])
    for key, value in getattr(document.node, "value", []):
        if isinstance(key, ScalarNode) and key.value == "items" and isinstance(value, SequenceNode):
            return [child.start_mark.line + 1 for child in value.value][:count]
    return [document.line] * count


def manifests_from_documents(documents: list[Document], path: str) -> Loaded:
    """Documents to manifests: `kind: List` (and `*List` with items) expanded
    into its items, anything that is not a mapping reported."""
    loaded = Loaded()
    for document in documents:
        value = document.value
        if not isinstance(value, dict):
            loaded.problems.append(_not_an_object(path, document.line, value))
        elif _is_list(value):
            for item, line in zip(value["items"], _item_lines(document), strict=True):
                if isinstance(item, dict):
                    loaded.manifests.append(Manifest(item, Source(path, line)))
                else:
                    loaded.problems.append(_not_an_object(path, line, item))
        else:
            loaded.manifests.append(Manifest(value, Source(path, document.line)))
    return loaded


def _not_an_object(path: str, line: int, value: Any) -> Problem:
    return Problem(Source(path, line), "", "file.not-an-object",
                   f"expected a Kubernetes object (a mapping), found {type(value).__name__}")


def load_text(text: str, path: str, *, max_nodes: int = MAX_NODES) -> Loaded:
    """Manifests of one YAML/JSON text; `path` is how sources will name it."""
    documents, problems = parse_documents(text, path, max_nodes=max_nodes)
    loaded = manifests_from_documents(documents, path)
    loaded.problems[:0] = problems
    return loaded


def read_text(file: Path, rel: str, *, max_bytes: int = MAX_FILE_BYTES) -> tuple[str | None, list[Problem]]:
    """A file's text if it is small enough and UTF-8, else the problem."""
    try:
        size = file.stat().st_size
        if size > max_bytes:
            return None, [Problem(Source(rel), "", "file.too-large",
                                  f"file is {size:,} bytes, over the limit of {max_bytes:,}")]
        with open(file, "rb") as handle:
            data = handle.read(max_bytes + 1)  # the file may grow between stat and read
    except OSError as error:
        return None, [Problem(Source(rel), "", "file.unreadable", f"cannot read: {error.strerror or error}")]
    if len(data) > max_bytes:
        return None, [Problem(Source(rel), "", "file.too-large", f"file is over the limit of {max_bytes:,} bytes")]
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        return None, [Problem(Source(rel, line), "", "file.not-utf8",
                              f"not UTF-8: byte 0x{data[error.start]:02x} at line {line}, column {column}")]


def relative_name(file: Path, repo_root: Path) -> str:
    """How sources name a file: relative to the repository root, posix style."""
    try:
        return Path(os.path.relpath(file, repo_root)).as_posix()
    except ValueError:  # another drive, on Windows
        return file.as_posix()


def load_file(file: Path, repo_root: Path, *, max_bytes: int = MAX_FILE_BYTES,
              max_nodes: int = MAX_NODES) -> Loaded:
    """Manifests of one file, its source named relative to `repo_root`."""
    rel = relative_name(file, repo_root)
    text, problems = read_text(file, rel, max_bytes=max_bytes)
    if text is None:
        return Loaded(problems=problems)
    return load_text(text, rel, max_nodes=max_nodes)


def load_files(files: Iterable[Path], repo_root: Path) -> Loaded:
    """Manifests of several files, in the order given, with all problems."""
    loaded = Loaded()
    for file in files:
        loaded.extend(load_file(file, repo_root))
    return loaded


def kustomization_file(directory: Path) -> Path | None:
    """The kustomization of a directory, by any of the names kustomize reads."""
    return next((directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()), None)
