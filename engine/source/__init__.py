"""The desired state from Git: fetching a revision, rendering an app's folder (plain
YAML, Kustomize, Helm) into manifests that remember their file and line, SOPS
decryption, refusing remote sources, the render cache, and rollback commits."""
