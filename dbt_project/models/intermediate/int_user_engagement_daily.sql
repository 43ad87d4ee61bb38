{{
    config(
        materialized='incremental',
        incremental_strategy='replace_range',
        range_column='activity_date',
    )
}}
-- One row per user and day with a music like or a bookmark: that day's counts. Point-in-time
-- totals are running sums up to feature_date (user_features_daily). Incremental by activity_date.
with likes as (
    select user_id, event_date, count(*) as music_likes, 0 as bookmarks
    from {{ ref('stg_app__music_likes') }}
    where {{ incremental_days('event_date') }}
    group by user_id, event_date
),

bookmarks as (
    select user_id, event_date, 0 as music_likes, count(*) as bookmarks
    from {{ ref('stg_app__bookmarks') }}
    where {{ incremental_days('event_date') }}
    group by user_id, event_date
)

select
    user_id,
    event_date as activity_date,
    cast(sum(music_likes) as integer) as music_likes,
    cast(sum(bookmarks) as integer) as bookmarks
from (select * from likes union all select * from bookmarks) as u
group by user_id, event_date
