-- One row per home-screen impression (a class shown to a user on a platform, at a position).
-- Dedupe: one row per key within a landing day (the latest ingested). Ingest quarantines events
-- whose time is not on their landing day, so an event key cannot recur on another landing day;
-- deduping per landing day lets a filter on landing_date prune Delta partitions, so a one-day
-- run reads one day of files instead of sorting the whole table.
with source as (
    select
        *,
        cast(shown_ts at time zone 'UTC' as date) as event_date
    from {{ source('bronze', 'impressions') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by landing_date, impression_id order by _ingested_at desc
    ) = 1
)

select
    cast(impression_id as varchar) as impression_id,
    cast(user_id as varchar) as user_id,
    cast(platform as varchar) as platform,
    cast(shown_ts at time zone 'UTC' as timestamp) as shown_at,
    event_date,
    cast(class_id as varchar) as class_id,
    cast(position as integer) as position,
    landing_date
from deduped
