"""Prefect Block types that prefect-gitops is configured with."""

from prefect_gitops.blocks.git_repository import GitRepository
from prefect_gitops.blocks.kubernetes_cluster import KubernetesCluster

BLOCK_TYPES = (GitRepository, KubernetesCluster)

__all__ = ["BLOCK_TYPES", "GitRepository", "KubernetesCluster"]
