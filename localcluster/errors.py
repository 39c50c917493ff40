class LocalClusterError(Exception):
    """A local cluster could not be built, started or stopped; the message says why."""
