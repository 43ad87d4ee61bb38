"""The daily schedule: at 03:00 UTC, run yesterday's partition end to end."""

import dagster as dg

from orchestration.jobs import daily_job

daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_job,
    hour_of_day=3,
    name="daily_lakehouse_schedule",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
