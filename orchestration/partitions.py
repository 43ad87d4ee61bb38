"""Daily partitions: partition D is the day whose events landed (UTC). They start at the
dataset's first day (the landing zone's first day, or a mapping's `first_day`) and end yesterday
(today's partition opens tomorrow)."""

import datetime as dt

import dagster as dg

# The first day when the data does not say (nothing landed yet, a mapping without `first_day`).
FIRST_DAY = "2026-09-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")


def daily_partitions_from(first_day: str | dt.date | None) -> dg.DailyPartitionsDefinition:
    """The daily partitions starting at `first_day` (None: FIRST_DAY)."""
    first = str(first_day) if first_day else FIRST_DAY  # a date prints as YYYY-MM-DD
    if first == FIRST_DAY:
        return daily_partitions
    return dg.DailyPartitionsDefinition(start_date=first, timezone="UTC")
