"""Where prefect-gitops keeps its machine-local state: $GITOPS_HOME, by default
in the user's cache folder (Git mirrors, render cache, objects found valid, the
kept Prefect server, the serve socket, local clusters and their binaries)."""

import os
from pathlib import Path


def gitops_home() -> Path:
    explicit = os.environ.get("GITOPS_HOME")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "prefect-gitops"
