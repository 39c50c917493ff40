"""Prefect Block types that prefect-gitops is configured with."""

from blocks.git_repository import GitRepository
from blocks.kubernetes_cluster import KubernetesCluster

BLOCK_TYPES = (GitRepository, KubernetesCluster)

__all__ = ["BLOCK_TYPES", "GitRepository", "KubernetesCluster"]
