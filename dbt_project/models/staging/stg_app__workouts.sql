-- One row per workout (a user taking a class on a platform). Timestamps are naive UTC.
with source as (
    select * from {{ source('bronze', 'workouts') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by workout_id order by landing_date desc, _ingested_at desc
    ) = 1
)

select
    cast(workout_id as varchar) as workout_id,
    cast(user_id as varchar) as user_id,
    cast(class_id as varchar) as class_id,
    cast(platform as varchar) as platform,
    cast(start_ts at time zone 'UTC' as timestamp) as started_at,
    cast(cast(start_ts at time zone 'UTC' as timestamp) as date) as event_date,
    cast(completed as boolean) as is_completed,
    cast(minutes as double) as minutes,
    cast(output_kj as double) as output_kj,
    landing_date
from deduped
