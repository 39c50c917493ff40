"""The app spec: gitops.yaml's apps, their policy settings, and which app goes to
which cluster."""
