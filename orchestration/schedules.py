"""Schedules: the daily chain at 03:00 UTC for yesterday; the user embeddings at 05:00 for
yesterday; the cache's freshness every hour."""

import dagster as dg

from orchestration.jobs import daily_job, embeddings_job, freshness_job

daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_job,
    hour_of_day=3,
    name="daily_recommendations_schedule",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

freshness_schedule = dg.ScheduleDefinition(
    name="cache_freshness_schedule",
    job=freshness_job,
    cron_schedule="17 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Checks every hour that the cache the app reads is at most a day and a bit old.",
)

embeddings_schedule = dg.build_schedule_from_partitioned_job(
    embeddings_job,
    hour_of_day=5,
    name="user_embeddings_schedule",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
