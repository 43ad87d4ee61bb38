"""Daily partitions: partition D is the day whose events landed (UTC)."""

import dagster as dg

# The simulator's default first day; a real deployment sets its own first export day.
FIRST_DAY = "2026-09-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")
