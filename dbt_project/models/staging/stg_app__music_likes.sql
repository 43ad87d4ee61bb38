-- One row per music like (user, class, time).
with source as (
    select * from {{ source('bronze', 'music_likes') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by user_id, class_id, liked_ts order by landing_date desc, _ingested_at desc
    ) = 1
)

select
    cast(user_id as varchar) as user_id,
    cast(class_id as varchar) as class_id,
    cast(liked_ts at time zone 'UTC' as timestamp) as liked_at,
    cast(cast(liked_ts at time zone 'UTC' as timestamp) as date) as event_date,
    landing_date
from deduped
