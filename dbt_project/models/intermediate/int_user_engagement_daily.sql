{{
    config(
        materialized='incremental',
        meta={'range_column': 'activity_date', 'carry_forward': true},
    )
}}
-- One row per user and day with a music like or a bookmark: that day's counts and the running
-- totals at the END of that day (`*_cum`), read point-in-time at the latest activity_date on or
-- before a feature date. Incremental: recomputes from the run's start, from opening balances
-- (macros/features/running_totals.sql).
{%- set from_date = recompute_from() %}

with likes as (
    select user_id, event_date, count(*) as music_likes, 0 as bookmarks
    from {{ ref('stg_app__music_likes') }}
    where {{ days_from(from_date, 'event_date', landing_column='landing_date') }}
    group by user_id, event_date
),

bookmarks as (
    select user_id, event_date, 0 as music_likes, count(*) as bookmarks
    from {{ ref('stg_app__bookmarks') }}
    where {{ days_from(from_date, 'event_date', landing_column='landing_date') }}
    group by user_id, event_date
),

days as (
    select user_id, event_date as activity_date, sum(music_likes) as music_likes, sum(bookmarks) as bookmarks
    from (select * from likes union all select * from bookmarks) as u
    group by user_id, event_date
)

{{ carry_forward_totals('days', 'user_id', ['music_likes', 'bookmarks'], from_date) }}
