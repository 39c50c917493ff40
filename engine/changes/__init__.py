"""Plan and apply: what a sync does to each object (a ChangeSet), decided by a
server-side dry-run against the live object (diff), carried out by server-side
apply in stages (apply), and the pruning of what left Git (prune); fieldsets walks
managedFields for both."""
