-- One row per bookmark (user, class, time).
with source as (
    select * from {{ source('bronze', 'bookmarks') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by user_id, class_id, bookmarked_ts order by landing_date desc, _ingested_at desc
    ) = 1
)

select
    cast(user_id as varchar) as user_id,
    cast(class_id as varchar) as class_id,
    cast(bookmarked_ts at time zone 'UTC' as timestamp) as bookmarked_at,
    cast(cast(bookmarked_ts at time zone 'UTC' as timestamp) as date) as event_date,
    landing_date
from deduped
