"""The Prefect-free core of prefect-gitops: it takes plain values (a GitSource, a
Cluster) and imports nothing of Prefect, of the blocks or of the flows.

    source/      Git, render, manifests, SOPS, the render cache, rollback commits
    validation/  structure, schema, policy, server-side dry-run
    changes/     plan (diff), ChangeSet, apply, prune
    state/       inventory, the Lease, drift, hand edits
    health/      per-kind rules, and waiting
    cluster/     the cluster client and kubeconfig
    spec/        gitops.yaml: apps, policy settings, targets
    objects.py   one object identity (ObjectKey) and the Manifest
    problems.py, report.py, secrets.py, home.py, workspace.py: shared by the stages
"""
