-- One row per music like (user, class, time).
-- Dedupe: one row per key within a landing day (the latest ingested). Ingest quarantines events
-- whose time is not on their landing day, so an event key cannot recur on another landing day;
-- deduping per landing day lets a filter on landing_date prune Delta partitions, so a one-day
-- run reads one day of files instead of sorting the whole table.
with source as (
    select
        *,
        cast(liked_ts at time zone 'UTC' as date) as event_date
    from {{ source('bronze', 'music_likes') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by landing_date, user_id, class_id, liked_ts order by _ingested_at desc
    ) = 1
)

select
    cast(user_id as varchar) as user_id,
    cast(class_id as varchar) as class_id,
    cast(liked_ts at time zone 'UTC' as timestamp) as liked_at,
    event_date,
    landing_date
from deduped
