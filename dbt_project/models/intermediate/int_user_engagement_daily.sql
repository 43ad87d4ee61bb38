{{
    config(
        materialized='incremental',
        meta={'range_column': 'activity_date', 'carry_forward': true},
    )
}}
-- One row per user and day with a music like or a bookmark: that day's counts and the running
-- totals at the END of that day (`*_cum`), read point-in-time at the latest activity_date on or
-- before a feature date. Incremental: recomputes from the run's start, from opening balances.
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

{%- if from_date is not none %},

opening as (
    {{ opening_balance(this, ['user_id'], 'activity_date', from_date) }}
)
{%- endif %}

select
    days.user_id,
    days.activity_date,
    cast(days.music_likes as integer) as music_likes,
    cast(days.bookmarks as integer) as bookmarks,
    {{ running_total('music_likes', from_date, 'days') }},
    {{ running_total('bookmarks', from_date, 'days') }}
from days
{%- if from_date is not none %}
left join opening on days.user_id = opening.user_id
{%- endif %}
window running as (
    partition by days.user_id order by days.activity_date
    rows between unbounded preceding and current row
)
