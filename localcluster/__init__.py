"""Real local Kubernetes control planes built from Kubernetes' published Go modules."""

from localcluster.cluster import AlreadyRunningError, LocalCluster, list_clusters
from localcluster.errors import LocalClusterError

__all__ = ["AlreadyRunningError", "LocalCluster", "LocalClusterError", "list_clusters"]
