"""What the cluster holds about our apps: the inventory (an ApplySet parent per app),
the Lease that fences one sync per app, drift from the revision last applied, and
hand edits (fields a person's tool holds)."""
