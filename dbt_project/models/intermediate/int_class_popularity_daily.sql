{{
    config(
        materialized='incremental',
        meta={'range_column': 'activity_date', 'carry_forward': true},
    )
}}
-- One row per class and day with any activity on it: that day's workouts, completions, music
-- likes, bookmarks, home-screen impressions and impressions taken, and their running totals at
-- the END of that day (`*_cum`). An impression is "taken" when the user starts that class on
-- that platform later the same day, so a day's numbers are final once the day has landed.
-- Popularity windows are differences of running totals (class_features_daily).
-- Incremental: recomputes from the run's start, from each class's opening balance
-- (macros/features/running_totals.sql).
{%- set from_date = recompute_from() %}
{%- set measures = ['workouts', 'completed', 'music_likes', 'bookmarks', 'impressions', 'impressions_taken'] %}

with workouts as (
    select * from {{ ref('stg_app__workouts') }}
    where {{ days_from(from_date, 'event_date', landing_column='landing_date') }}
),

impressions as (
    select * from {{ ref('stg_app__impressions') }}
    where {{ days_from(from_date, 'event_date', landing_column='landing_date') }}
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
    where {{ days_from(from_date, 'event_date', landing_column='landing_date') }}
    union all
    select class_id, event_date, 0, 0, 0, 1, 0, 0
    from {{ ref('stg_app__bookmarks') }}
    where {{ days_from(from_date, 'event_date', landing_column='landing_date') }}
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
),

days as (
    select
        class_id,
        event_date as activity_date,
        {% for m in measures -%}
        sum({{ m }}) as {{ m }}{{ "," if not loop.last }}
        {% endfor %}
    from events
    group by class_id, event_date
)

{{ carry_forward_totals('days', 'class_id', measures, from_date) }}
