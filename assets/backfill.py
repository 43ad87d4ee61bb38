"""How a backfill of many daily partitions is split into runs, for every partitioned step that
takes a range (ingest, dbt, the gold publish, the mapped import): one policy, so a backfill
launched from the UI splits all of them the same way."""

import dagster as dg

from lakehouse.io.settings import backfill_days_per_run


def backfill_policy() -> dg.BackfillPolicy:
    """One run for the whole range (one Delta commit per table), or runs of at most
    LAKEHOUSE_BACKFILL_DAYS_PER_RUN days, so a platform-sized backfill stays within memory."""
    days = backfill_days_per_run()
    return dg.BackfillPolicy.single_run() if days is None else dg.BackfillPolicy.multi_run(days)
