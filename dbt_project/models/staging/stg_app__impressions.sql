-- One row per home-screen impression (a class shown to a user on a platform, at a position).
with source as (
    select * from {{ source('bronze', 'impressions') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by impression_id order by landing_date desc, _ingested_at desc
    ) = 1
)

select
    cast(impression_id as varchar) as impression_id,
    cast(user_id as varchar) as user_id,
    cast(platform as varchar) as platform,
    cast(shown_ts at time zone 'UTC' as timestamp) as shown_at,
    cast(cast(shown_ts at time zone 'UTC' as timestamp) as date) as event_date,
    cast(class_id as varchar) as class_id,
    cast(position as integer) as position,
    landing_date
from deduped
