"""The blocks saved in Prefect: registering our types so they show in the UI's
block catalog, and finding every saved cluster (apps select clusters by name
or by label, so the whole set is needed)."""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client

from prefect_gitops.blocks import BLOCK_TYPES, KubernetesCluster
from prefect_gitops.engine.cluster.kubeconfig import Cluster


def register_block_types() -> None:
    for block_type in BLOCK_TYPES:
        block_type.register_type_and_schema()


def saved_names(block_type: type[Block]) -> list[str]:
    """Names of the saved blocks of one type (secrets are not fetched)."""
    with get_client(sync_client=True) as client:
        documents = client.read_block_documents_by_type(block_type.get_block_type_slug(), include_secrets=False)
    return sorted(d.name for d in documents if d.name and not d.is_anonymous)


def load_clusters(names: list[str] | None = None) -> dict[str, Cluster]:
    """Saved clusters by name, as the engine takes them: the given ones, or all."""
    return {name: KubernetesCluster.load(name).cluster(name) for name in (names or saved_names(KubernetesCluster))}
