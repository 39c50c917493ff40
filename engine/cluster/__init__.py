"""The cluster client: one KubeClient per cluster (plain JSON over urllib3, time-limited,
retried, counted, write-fenced), kubeconfigs read as kubectl reads them, and which
kinds are cluster-scoped."""
