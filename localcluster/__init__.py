"""Real local Kubernetes control planes built from Kubernetes' published Go modules."""

from prefect_gitops.localcluster.cluster import AlreadyRunningError, LocalCluster, list_clusters
from prefect_gitops.localcluster.errors import LocalClusterError

__all__ = ["AlreadyRunningError", "LocalCluster", "LocalClusterError", "list_clusters"]
