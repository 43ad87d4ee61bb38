{{
    config(
        materialized='incremental',
        incremental_strategy='replace_range',
        range_column='activity_date',
    )
}}
-- One row per class and day with any activity on it: that day's workouts, completions, music
-- likes, bookmarks, home-screen impressions and impressions taken. An impression is "taken" when
-- the user starts that class on that platform later the same day, so a day's numbers are final
-- once the day has landed. Popularity windows are running sums up to feature_date
-- (class_features_daily). Incremental by activity_date.
with workouts as (
    select * from {{ ref('stg_app__workouts') }}
    where {{ incremental_days('event_date') }}
),

impressions as (
    select * from {{ ref('stg_app__impressions') }}
    where {{ incremental_days('event_date') }}
),

last_start_by_day as (
    select user_id, class_id, platform, event_date, max(started_at) as last_started_at
    from workouts
    group by user_id, class_id, platform, event_date
),

events as (
    select class_id, event_date, 1 as workouts, case when is_completed then 1 else 0 end as completed,
        0 as music_likes, 0 as bookmarks, 0 as impressions, 0 as impressions_taken
    from workouts
    union all
    select class_id, event_date, 0, 0, 1, 0, 0, 0
    from {{ ref('stg_app__music_likes') }}
    where {{ incremental_days('event_date') }}
    union all
    select class_id, event_date, 0, 0, 0, 1, 0, 0
    from {{ ref('stg_app__bookmarks') }}
    where {{ incremental_days('event_date') }}
    union all
    select
        i.class_id, i.event_date, 0, 0, 0, 0, 1,
        case when l.last_started_at >= i.shown_at then 1 else 0 end
    from impressions as i
    left join last_start_by_day as l
        on i.user_id = l.user_id
        and i.class_id = l.class_id
        and i.platform = l.platform
        and i.event_date = l.event_date
)

select
    class_id,
    event_date as activity_date,
    cast(sum(workouts) as integer) as workouts,
    cast(sum(completed) as integer) as completed,
    cast(sum(music_likes) as integer) as music_likes,
    cast(sum(bookmarks) as integer) as bookmarks,
    cast(sum(impressions) as integer) as impressions,
    cast(sum(impressions_taken) as integer) as impressions_taken
from events
group by class_id, event_date
