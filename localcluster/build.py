"""Build the localcluster binary from the Go sources beside this file, once per
version of those sources: the binary's name carries a hash of them."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from prefect_gitops.engine.home import gitops_home
from prefect_gitops.localcluster.errors import LocalClusterError

SOURCE_DIR = Path(__file__).resolve().parent
KUBERNETES_VERSION = "v1.37.2"
MIN_GO = (1, 26)
BUILD_TIMEOUT_S = 3600
_VERSION_PACKAGE = "k8s.io/component-base/version"


class GoNotFoundError(LocalClusterError):
    pass


class BuildError(LocalClusterError):
    pass


def source_hash(source_dir: Path = SOURCE_DIR) -> str:
    """A hash of every file that goes into the binary (Go sources, go.mod, go.sum)."""
    digest = hashlib.sha256()
    for path in sorted(_build_inputs(source_dir)):
        digest.update(str(path.relative_to(source_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _build_inputs(source_dir: Path):
    for path in source_dir.rglob("*"):
        if path.name in ("go.mod", "go.sum") or (path.suffix == ".go" and not path.name.endswith("_test.go")):
            yield path


def binary_path(source_dir: Path = SOURCE_DIR) -> Path:
    return gitops_home() / "bin" / f"localcluster-{source_hash(source_dir)}"


def share_binaries(home: Path) -> None:
    """Let another GITOPS_HOME (a test session's, a benchmark's) use this one's
    binaries: its bin/ becomes a link to ours. They are keyed on their sources,
    and a build takes minutes."""
    shared = gitops_home() / "bin"
    shared.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (home / "bin").symlink_to(shared.resolve())


def ensure_binary(
    source_dir: Path = SOURCE_DIR, on_progress: Callable[[str], None] = lambda _: None
) -> Path:
    """Return the binary for the current sources, building it first if needed."""
    target = binary_path(source_dir)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same sources
        if not target.exists():
            _build(source_dir, target, on_progress)
            _remove_stale_binaries(target)
    return target


def find_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise GoNotFoundError(
            "the local cluster is built from Kubernetes' Go modules and needs Go "
            f"{MIN_GO[0]}.{MIN_GO[1]} or newer, but no `go` command was found: install Go "
            "(for example into /usr/local/go) and put its bin folder on PATH"
        )
    version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60).stdout
    found = re.match(r"go(\d+)\.(\d+)", version.strip())
    if found and (int(found[1]), int(found[2])) < MIN_GO:
        raise GoNotFoundError(
            f"the local cluster needs Go {MIN_GO[0]}.{MIN_GO[1]} or newer; {go} is {version.strip()}"
        )
    return go


def _build(source_dir: Path, target: Path, on_progress: Callable[[str], None]) -> None:
    go = find_go()
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    ldflags = " ".join(
        [
            "-s -w",
            f"-X {_VERSION_PACKAGE}.gitVersion={KUBERNETES_VERSION}",
            f"-X {_VERSION_PACKAGE}.gitMajor={major}",
            f"-X {_VERSION_PACKAGE}.gitMinor={minor}",
            f"-X {_VERSION_PACKAGE}.gitTreeState=clean",
        ]
    )
    partial = target.with_name(target.name + ".partial")
    command = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(partial), "."]
    env = {**os.environ, "CGO_ENABLED": "0"}
    on_progress(f"building the local cluster binary (Kubernetes {KUBERNETES_VERSION}; "
                "a cold build takes about 7 min on 2 cores)")
    started = time.monotonic()
    try:
        result = subprocess.run(
            command, cwd=source_dir, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"go build did not finish within {BUILD_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise BuildError(f"go build of {source_dir} failed (exit {result.returncode}):\n{tail}")
    partial.rename(target)
    on_progress(f"built {target.name} in {time.monotonic() - started:.0f} s")


def _remove_stale_binaries(current: Path) -> None:
    for old in current.parent.glob("localcluster-*"):
        if old != current and not old.name.endswith(".partial"):
            old.unlink(missing_ok=True)
