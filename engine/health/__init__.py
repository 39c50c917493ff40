"""Health: the rules that judge one object (rules) and the waiting for a set of
objects to become healthy (wait)."""
