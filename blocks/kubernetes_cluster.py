"""A Kubernetes cluster as a Prefect block: its whole kubeconfig kept as a secret.

Unlike prefect-kubernetes' KubernetesClusterConfig, which stores the kubeconfig in
a plain dict that the API returns in clear, the kubeconfig here is a SecretStr:
masked in the UI, in repr and in logs, and only read back to build an API client.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_gitops.engine.cluster.kubeconfig import Cluster, ClusterAccess, load_access, read_kubeconfig

# kubeconfig entries that may name a file instead of carrying the data inline.
_FILE_FIELDS = {
    "clusters": [("cluster", "certificate-authority")],
    "users": [("user", "client-certificate"), ("user", "client-key")],
}


class KubernetesCluster(Block):
    """A Kubernetes cluster that GitOps apps are synced to."""

    _block_type_slug = "gitops-kubernetes-cluster"
    _block_type_name = "GitOps Kubernetes Cluster"
    _description = (
        "A Kubernetes cluster for prefect-gitops: its kubeconfig (kept secret), "
        "the context to use, and labels to select clusters by (e.g. env: prod)."
    )

    kubeconfig: SecretStr = Field(
        description="The whole kubeconfig YAML, with credentials inline."
    )
    context: str | None = Field(
        default=None, description="The kubeconfig context to use; its current-context when empty."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Labels to select clusters by, e.g. env: prod."
    )
    require_impersonation: bool = Field(
        default=False,
        description=(
            "Every app synced here must name a serviceAccountName: its requests then impersonate "
            "that ServiceAccount and the cluster's RBAC fences it. An app without one is refused."
        ),
    )

    @classmethod
    def from_kubeconfig_file(
        cls, path: str | Path, context: str | None = None, labels: dict[str, str] | None = None,
        require_impersonation: bool = False,
    ) -> "KubernetesCluster":
        """Read a kubeconfig file, inlining any certificate or key files it names so
        that the block is self-contained. One that cannot give access to the
        context's cluster is refused (KubeconfigError, naming what is wrong)."""
        path = Path(path)
        config = read_kubeconfig(path)
        load_access(config, context, base_dir=path.resolve().parent)
        _inline_files(config, base_dir=path.resolve().parent)
        return cls(
            kubeconfig=SecretStr(yaml.safe_dump(config, sort_keys=False)),
            context=context,
            labels=labels or {},
            require_impersonation=require_impersonation,
        )

    def cluster(self, name: str) -> Cluster:
        """This cluster as the engine takes it, under the name apps target it by."""
        return Cluster(name, self.kubeconfig, self.context, dict(self.labels), self.require_impersonation)

    def access(self) -> ClusterAccess:
        """How to reach and authenticate to this cluster (engine's Cluster.access)."""
        return self.cluster(self._block_document_name or "").access()

    def server_version(self) -> str:
        """The server's version as it reports it, e.g. "v1.37.2"."""
        from prefect_gitops.engine.cluster.kube import KubeClient  # the client, only when a cluster is asked

        with KubeClient(self.access()) as kube:
            return kube.server_version()


def _inline_files(config: dict, base_dir: Path) -> None:
    """Replace `certificate-authority: file` and the like by their `-data` forms."""
    for section, fields in _FILE_FIELDS.items():
        for entry in config.get(section) or []:
            for holder_key, field in fields:
                holder = entry.get(holder_key) or {}
                file_name = holder.pop(field, None)
                if file_name and not holder.get(f"{field}-data"):
                    data = (base_dir / file_name).read_bytes()
                    holder[f"{field}-data"] = base64.b64encode(data).decode()
