"""What every stage task shares: no result persisted and no cache, because
stage values hold Secret data (rendered manifests, desired bodies) that must
never reach Prefect's result storage or database."""

from prefect.cache_policies import NO_CACHE

STAGE = dict(cache_policy=NO_CACHE, persist_result=False, log_prints=False)
