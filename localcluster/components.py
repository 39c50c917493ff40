"""The processes of a local cluster and the flags each starts with. Each runs as
its own process of the one binary: in one process they would share global
state (feature gates, registries) and fight over it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect_gitops.localcluster.errors import LocalClusterError

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Start order; stopped in reverse.
COMPONENTS = ("etcd", "apiserver", "controller-manager", "scheduler", "kubelet")


def component_name(name: str) -> str:
    """The component a user means: its name here, or Kubernetes' own name for
    it ("kube-apiserver", "kube-scheduler", ...)."""
    bare = name.removeprefix("kube-")
    if bare in COMPONENTS:
        return bare
    raise LocalClusterError(f"unknown component {name!r}: use one of {', '.join(COMPONENTS)}")


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


@dataclass(frozen=True)
class Layout:
    """Files of one cluster inside its state folder."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.csv"

    @property
    def kubeconfig(self) -> Path:
        """The administrator's kubeconfig, for people and for prefect-gitops."""
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


# The controllers' and scheduler's own limit on requests to the API server (20 and
# 50 a second by default, for a server shared by many): a local cluster has no other
# tenant, and at 20 a second 250 new Deployments take a minute to become available.
_CLIENT_RATE = ("--kube-api-qps=400", "--kube-api-burst=800")
# Workers per controller (5 by default): with 5, 250 new Deployments wait in line for
# their ReplicaSets and pods for seconds while the API server has time to spare.
_CONTROLLER_WORKERS = ("--concurrent-deployment-syncs=25", "--concurrent-replicaset-syncs=25")


def component_args(component: str, layout: Layout, ports: Ports, node_name: str) -> list[str]:
    pki = layout.pki
    if component == "etcd":
        return [
            f"--data-dir={layout.etcd_data}",
            f"--client-port={ports.etcd_client}",
            f"--peer-port={ports.etcd_peer}",
        ]
    if component == "apiserver":
        return [
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            "--bind-address=127.0.0.1",
            # Required on hosts without a default route.
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={layout.tokens}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The endpoints of the `kubernetes` Service would name a loopback address,
            # which Endpoints validation refuses; nothing in the cluster needs them.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]
    if component == "controller-manager":
        kubeconfig = layout.component_kubeconfig(component)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            "--leader-elect=false",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            # Each controller acts as its own service account, as on a kubeadm cluster.
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            *_CLIENT_RATE,
            *_CONTROLLER_WORKERS,
        ]
    if component == "scheduler":
        kubeconfig = layout.component_kubeconfig(component)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            "--leader-elect=false",
            "--profiling=false",
            *_CLIENT_RATE,
        ]
    if component == "kubelet":
        return [
            f"--kubeconfig={layout.component_kubeconfig(component)}",
            f"--node-name={node_name}",
            "--node-ip=127.0.0.1",
            f"--pod-cidr={POD_CIDR}",
        ]
    raise ValueError(f"unknown component {component!r}")
