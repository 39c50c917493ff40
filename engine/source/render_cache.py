"""Rendered manifests kept between runs, so that a scheduled sync whose branch
head has not moved compares the cluster with Git without rendering again, and a
sync of a revision rendered before (a served process's every sync) skips the render.

An entry is keyed on what decides a render: the commit, the app's spec and the
cluster. It holds what the render stage produced from the repository's own
files (the same content as the checked-out tree beside it in $GITOPS_HOME), as a
0600 file in a 0700 directory; it is only a cache, and a miss renders again.
Content that was not in Git as it is (e.g. decrypted Secrets) must never be
put here: apps with `decryption` are never cached, and render each time."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from prefect_gitops.engine.home import gitops_home
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.spec.appspec import App

FORMAT = 1  # bump when the rendered shape changes
KEEP_ENTRIES = 512


def cache_root() -> Path:
    return gitops_home() / "render-cache"


def cache_key(revision: str, app: App, cluster: str) -> str:
    spec = app.model_dump_json(by_alias=True)
    return hashlib.sha256(f"{FORMAT}\0{revision}\0{cluster}\0{spec}".encode()).hexdigest()


def cacheable(app: App) -> bool:
    """Not an app whose render holds decrypted Secrets."""
    return app.decryption is None


def rendered(revision: str, app: App, cluster: str, render: Callable[[], list[Manifest]]) -> list[Manifest]:
    """The manifests from the cache, or from `render()` and then cached. Rendering
    is deterministic: the same revision, app spec and cluster give the same objects."""
    cached = load(revision, app, cluster)
    if cached is not None:
        return cached
    manifests = render()
    store(revision, app, cluster, manifests)
    return manifests


def load(revision: str, app: App, cluster: str) -> list[Manifest] | None:
    """The manifests rendered before for exactly this revision, app spec and cluster."""
    if not cacheable(app):
        return None
    path = cache_root() / f"{cache_key(revision, app, cluster)}.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return [Manifest(e["obj"], Source(e["path"], e["line"])) for e in entries]


def store(revision: str, app: App, cluster: str, manifests: list[Manifest]) -> None:
    if not cacheable(app):
        return
    root = cache_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = root / f"{cache_key(revision, app, cluster)}.json"
    entries = [{"obj": m.obj, "path": m.source.path, "line": m.source.line} for m in manifests]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(entries, out)
    os.replace(tmp, path)
    _trim(root)


def _trim(root: Path) -> None:
    """Keep the newest entries: old revisions are not compared with again."""
    entries = sorted(root.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[KEEP_ENTRIES:]:
        stale.unlink(missing_ok=True)
