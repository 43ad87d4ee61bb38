-- One row per workout (a user taking a class on a platform), per landing day the latest
-- ingested (macros/staging.sql). Timestamps are naive UTC.
with deduped as (
    {{ latest_events(source('bronze', 'workouts'), 'start_ts', ['workout_id']) }}
)

select
    {{ typed(['workout_id', 'user_id', 'class_id', 'platform'], 'varchar') }},
    {{ utc('start_ts') }} as started_at,
    event_date,
    cast(completed as boolean) as is_completed,
    {{ typed(['minutes', 'output_kj'], 'double') }},
    landing_date
from deduped
