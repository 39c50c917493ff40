"""The render stage: an app's manifests for one cluster at one revision, each
with its file and line. What was rendered is kept (engine/source/render_cache.py) so an
idle scheduled sync can compare the cluster with Git, and a sync of the same
revision can go on, without rendering again;
apps with SOPS-encrypted files are decrypted here with the age key of their
secretRef (blocks/decryption.py) and never cached."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from prefect_gitops.blocks.decryption import render_options
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.source import render_cache
from prefect_gitops.engine.source.render import render_app
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.tasks.options import STAGE


@task(name="render", task_run_name="render {app.name}@{cluster}", **STAGE)
def render_target(tree: Path, app: App, cluster: str, revision: str) -> list[Manifest]:
    """Rendering is deterministic: never retried, and not done twice for one
    revision, app spec and cluster; a failure raises ProblemsFound."""
    manifests = render_cache.rendered(revision, app, cluster,
                                      lambda: render_app(tree, app, cluster, render_options(app)))
    get_run_logger().info("%s@%s: %d objects at %s", app.name, cluster, len(manifests), revision[:12])
    return manifests
