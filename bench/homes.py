"""A benchmark's own state, never the user's: a GITOPS_HOME (where gitops keeps
its Git clones, render cache, objects found valid, the kept Prefect server, the
serve socket and the local clusters), a PREFECT_HOME and a kubectl cache
(KUBECACHEDIR: discovery and HTTP caches) inside the benchmark's temporary
folder, set in this process's environment so that every process it starts has
them. PREFECT_API_URL is cleared: a benchmark names its own server. For a
benchmark on local clusters, the cluster binaries are the user's GITOPS_HOME's
(localcluster's share_binaries): a build product, not state, that takes minutes
to build."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from prefect_gitops.localcluster.build import share_binaries

KUBECTL = str(Path(sys.executable).parent / "kubectl")
SETTINGS = ("GITOPS_HOME", "PREFECT_HOME", "KUBECACHEDIR", "PREFECT_API_URL",
            "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")


@dataclass(frozen=True)
class Homes:
    gitops: Path
    prefect: Path
    kubectl_cache: Path


@contextlib.contextmanager
def own_homes(work: Path, local_clusters: bool = True) -> Iterator[Homes]:
    """GITOPS_HOME, PREFECT_HOME and KUBECACHEDIR in `work` (a fresh folder) until
    the block ends; the environment as it was afterwards."""
    homes = Homes(work / "gitops-home", work / "prefect-home", work / "kubectl-cache")
    homes.gitops.mkdir(parents=True)
    homes.prefect.mkdir()
    if local_clusters:
        share_binaries(homes.gitops)  # before GITOPS_HOME is ours: the user's binaries
    saved = {name: os.environ.get(name) for name in SETTINGS}
    os.environ.update(GITOPS_HOME=str(homes.gitops), PREFECT_HOME=str(homes.prefect),
                      KUBECACHEDIR=str(homes.kubectl_cache), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      DO_NOT_TRACK="1")
    os.environ.pop("PREFECT_API_URL", None)
    try:
        yield homes
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def warm_kubectl_cache(kubeconfig: Path, cache_dir: Path) -> None:
    """kubectl's discovery cache filled, as a person's is after their first command
    (for the rows where ours is warm too)."""
    subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", "--cache-dir", str(cache_dir), "api-resources",
                    "-o", "name"], check=True, capture_output=True, timeout=120)
