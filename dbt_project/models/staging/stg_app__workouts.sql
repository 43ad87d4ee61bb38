-- One row per workout (a user taking a class on a platform). Timestamps are naive UTC.
-- Dedupe: one row per key within a landing day (the latest ingested). Ingest quarantines events
-- whose time is not on their landing day, so an event key cannot recur on another landing day;
-- deduping per landing day lets a filter on landing_date prune Delta partitions, so a one-day
-- run reads one day of files instead of sorting the whole table.
with source as (
    select
        *,
        cast(start_ts at time zone 'UTC' as date) as event_date
    from {{ source('bronze', 'workouts') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by landing_date, workout_id order by _ingested_at desc
    ) = 1
)

select
    cast(workout_id as varchar) as workout_id,
    cast(user_id as varchar) as user_id,
    cast(class_id as varchar) as class_id,
    cast(platform as varchar) as platform,
    cast(start_ts at time zone 'UTC' as timestamp) as started_at,
    event_date,
    cast(completed as boolean) as is_completed,
    cast(minutes as double) as minutes,
    cast(output_kj as double) as output_kj,
    landing_date
from deduped
