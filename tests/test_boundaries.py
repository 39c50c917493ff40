"""The house's boundaries: the engine is Prefect-free (it takes plain values; the
blocks turn themselves into them at the edge), imports go down the layers
(engine, localcluster, blocks, tasks, flows, cli) and never in a loop, counting
imports inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("blocks", "cli", "engine", "flows", "localcluster", "tasks")
# The layers, from the bottom: a module imports only from its layer or those below.
LAYERS = ("engine", "localcluster", "blocks", "tasks", "flows", "cli")


def modules(package: str) -> dict[str, Path]:
    """Every module of one of our packages (a folder), by its installed dotted name."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = ("prefect_gitops", *path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_importing_every_engine_module_loads_nothing_of_prefect_nor_of_the_layers_above():
    names = sorted(modules("engine"))
    script = ("import importlib, json, sys\n"
              f"for name in {names!r}: importlib.import_module(name)\n"
              "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                                       check=True).stdout)
    above = tuple(f"prefect_gitops.{p}" for p in PACKAGES if p != "engine")
    outside = sorted(m for m in loaded if m.split(".")[0] in ("prefect", "kubernetes") or m.startswith(above))
    assert outside == []


def imports_of(path: Path, name: str, ours: set[str]) -> set[str]:
    """Our modules that the module `name` at `path` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]  # for relative imports
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from a import b`: b may be a module of a, else a name defined in a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in ours else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in ours and t != name)
    return found


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def import_graph() -> dict[str, set[str]]:
    files = {name: path for package in PACKAGES for name, path in modules(package).items()}
    ours = set(files)
    return {name: imports_of(path, name, ours) for name, path in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    def layer(module: str) -> int:
        return LAYERS.index(module.split(".")[1])
    return sorted((a, b) for a, imported in graph.items() for b in imported if layer(a) < layer(b))


def test_imports_go_downwards_only():
    assert upward_imports(import_graph()) == []


def test_an_upward_import_is_found_when_there_is_one():
    graph = import_graph()
    graph["prefect_gitops.blocks.registry"].add("prefect_gitops.flows.sync")
    assert upward_imports(graph) == [("prefect_gitops.blocks.registry", "prefect_gitops.flows.sync")]


def test_no_modules_of_ours_import_each_other_in_a_loop():
    assert loops(import_graph()) == []


def test_a_loop_is_found_when_there_is_one():
    graph = import_graph()
    # flows.sync imports the engine, which now imports it back
    graph["prefect_gitops.engine.cluster.kube"].add("prefect_gitops.flows.sync")
    assert any({"prefect_gitops.engine.cluster.kube", "prefect_gitops.flows.sync"} <= set(group) for group in loops(graph))
