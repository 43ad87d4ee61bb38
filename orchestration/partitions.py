"""Daily partitions: partition D is the day whose events landed (UTC)."""

import dagster as dg

# The simulator's default first day; a mapped dataset sets its own (`first_day` in its mapping).
FIRST_DAY = "2026-09-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")


def daily_partitions_from(first_day: str | None) -> dg.DailyPartitionsDefinition:
    """The daily partitions starting at `first_day` (None: FIRST_DAY)."""
    if not first_day or first_day == FIRST_DAY:
        return daily_partitions
    return dg.DailyPartitionsDefinition(start_date=first_day, timezone="UTC")
