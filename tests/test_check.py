"""A scheduled tick checks its clusters at once (tasks/check.py), not one after
another: each cluster's API server is behind a proxy that lets the tick's first
connection through only when the other cluster's has arrived too."""

from __future__ import annotations

import secrets
import threading

import pytest

from conftest import kubectl
from plain_repo import configmap, gitops_yaml, make_plain_repo
from tcp_proxy import proxied_kubeconfig

pytestmark = pytest.mark.cluster

# Below the client's connect limit (5 s, the TLS handshake included): a check
# held this long fails nothing, it only breaks the rendezvous.
RENDEZVOUS_S = 3


def test_a_scheduled_tick_checks_its_clusters_at_once(registered_clusters, prefect_api, tmp_path):
    from prefect_gitops.blocks import KubernetesCluster
    from prefect_gitops.flows.sync import gitops_sync

    suffix = secrets.token_hex(3)
    namespace = f"tick-{suffix}"
    proxies, names = [], []
    for cluster in registered_clusters.values():
        name = f"tick-{cluster.name[-1]}-{suffix}"
        proxy, config = proxied_kubeconfig(cluster.kubeconfig, tmp_path / name)
        KubernetesCluster.from_kubeconfig_file(config).save(name, overwrite=True)
        kubectl(cluster.kubeconfig, "create", "namespace", namespace)
        proxies.append(proxy)
        names.append(name)
    app = {"name": "tick", "path": "tick", "namespace": namespace, "clusters": names}
    repo = make_plain_repo(tmp_path, "tick", {"gitops.yaml": gitops_yaml(app),
                                              "tick/settings.yaml": configmap("settings", greeting="hello")})
    try:
        assert gitops_sync(repo=repo.block_name).ok  # up to date on both clusters

        rendezvous = threading.Barrier(len(proxies), timeout=RENDEZVOUS_S)
        for proxy in proxies:
            proxy.hold_next(rendezvous)
        idle = gitops_sync(repo=repo.block_name, if_changed=True)
        assert idle.ok and idle.results == []  # nothing to do anywhere
        # Each cluster's first connection of the tick waited for the other's: they were checked at once.
        assert not rendezvous.broken
    finally:
        for proxy in proxies:
            proxy.stop()
