"""The wheel of prefect-gitops works without the checkout: built from the working
tree, installed into a fresh virtual environment, every module of it imports
from there (from a directory outside the checkout) under the one package
prefect_gitops (nothing else at the top of site-packages), and it carries what is
not Python: the Go module the local cluster binary is built from, and prefect.yaml.

Nothing is downloaded: the wheel is built with the setuptools of the project's
virtual environment, and the fresh environment borrows that environment's
installed dependencies through a .pth file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from prefect_gitops.localcluster.build import source_hash

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["blocks", "cli", "engine", "flows", "localcluster", "tasks"]  # the folders; installed as
PACKAGE = "prefect_gitops"  # prefect_gitops.blocks, prefect_gitops.cli, ...
GO_FILES = ("*.go", "go.mod", "go.sum")
TIMEOUT_S = 300
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache")

IMPORT_ALL = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = {"file": importlib.import_module(name).__file__}
    except BaseException as error:
        found[name] = {"error": f"{type(error).__name__}: {error}"}
print(json.dumps(found))
"""


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_HOME=str(cwd / "prefect-home"))
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the working tree: a build writes build/ and *.egg-info
    where it runs, and other people work in the checkout."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "src", symlinks=True, ignore=_NOT_COPIED)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", work / "dist", work / "src", cwd=work)
    [built] = (work / "dist").glob("prefect_gitops-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; the directory outside
    the checkout that its commands run in."""
    outside = tmp_path_factory.mktemp("outside")
    run(sys.executable, "-m", "venv", "--without-pip", outside / "venv", cwd=outside)
    python = outside / "venv" / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
        wheel, cwd=outside)
    # Only now the dependencies: had pip seen the project's editable install
    # there, it would have uninstalled it to put the wheel in its place.
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=outside)
    site = Path(purelib.stdout.strip())
    (site / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return outside


def installed_site(venv: Path) -> Path:
    [site] = (venv / "venv" / "lib").glob("python3.*/site-packages")
    return site


def source_modules() -> set[str]:
    """Every Python module of the packages in the working tree."""
    return {".".join((PACKAGE, *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
            for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}


def wheel_modules(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
                for n in archive.namelist() if n.endswith(".py")}


@pytest.fixture(scope="module")
def imported(venv, wheel) -> dict[str, dict]:
    """Each module of the wheel imported in the fresh environment: its file or its error."""
    done = run(venv / "venv" / "bin" / "python", "-c", IMPORT_ALL, *sorted(wheel_modules(wheel)), cwd=venv)
    return json.loads(done.stdout.splitlines()[-1])


def test_the_wheel_holds_every_module_of_the_working_tree_and_nothing_else(wheel):
    # A folder without __init__.py is not found as a package, and silently left out.
    assert wheel_modules(wheel) == source_modules()
    assert {m.split(".")[1] for m in wheel_modules(wheel)} == set(PACKAGES)


def test_the_wheel_installs_one_package_at_the_top_of_site_packages(venv):
    site = installed_site(venv)
    ours = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"}
    assert ours == {PACKAGE}
    shown = run(sys.executable, "-m", "pip", "--python", venv / "venv" / "bin" / "python", "show", "-f",
                "prefect-gitops", cwd=venv)
    files = [line.strip() for line in shown.stdout.split("Files:", 1)[1].splitlines() if line.strip()]
    assert files and all(f.startswith((f"{PACKAGE}/", "prefect_gitops-", "../")) for f in files), files


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports_from_the_installed_wheel(package, imported, venv):
    modules = {name: found for name, found in imported.items() if name.split(".")[1] == package}
    assert modules, f"no module of {package} in the wheel"
    errors = {name: found["error"] for name, found in modules.items() if "error" in found}
    assert errors == {}
    site = installed_site(venv)
    assert all(Path(found["file"]).is_relative_to(site) for found in modules.values()), modules


def test_the_go_module_of_the_local_cluster_is_installed(venv):
    installed = installed_site(venv) / PACKAGE / "localcluster"
    source = ROOT / "localcluster"
    sources = [p.relative_to(source) for pattern in GO_FILES for p in source.rglob(pattern)]
    assert any(p.parts[0] == "fakekubelet" for p in sources)
    for path in sources:
        assert (installed / path).read_bytes() == (source / path).read_bytes(), path
    # The installed package would build (or find) the binary of the same sources.
    hashed = run(venv / "venv" / "bin" / "python", "-c",
                 "from prefect_gitops.localcluster.build import source_hash; print(source_hash())", cwd=venv)
    assert hashed.stdout.strip() == source_hash(source)


def test_the_deployments_file_is_installed_for_gitops_serve(venv):
    assert (installed_site(venv) / PACKAGE / "cli" / "prefect.yaml").read_text() == (ROOT / "prefect.yaml").read_text()


def test_the_gitops_command_runs_from_the_installed_wheel(venv):
    shown = run(venv / "venv" / "bin" / "gitops", "--help", cwd=venv)
    assert "serve" in shown.stdout and "sync" in shown.stdout
