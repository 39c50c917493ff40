"""Validation of rendered objects, every problem at once (validate): structure,
schema, policy, the server-side dry-run and the impersonation fence, one concept
a module."""
