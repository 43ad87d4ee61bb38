{{
    config(
        materialized='incremental',
        incremental_strategy='replace_range',
        range_column='activity_date',
    )
}}
-- One row per user and day with at least one workout: that day's activity only (counts,
-- minutes, the last workout of the day, per-platform start-hour sums, per-discipline counts,
-- sessions). Point-in-time features are running sums of these rows up to feature_date
-- (user_features_daily, int_user_discipline_affinity). Incremental by activity_date.
with workouts as (
    select * from {{ ref('int_workouts_enriched') }}
    where {{ incremental_days('event_date') }}
),

-- a session that runs past midnight counts once per day it touches (no peeking past the day)
session_days as (
    select user_id, event_date, sum(minutes) as session_minutes
    from workouts
    group by user_id, session_id, event_date
),

sessions_daily as (
    select user_id, event_date, count(*) as sessions, sum(session_minutes) as session_minutes
    from session_days
    group by user_id, event_date
),

daily as (
    select
        user_id,
        event_date as activity_date,
        count(*) as workouts,
        sum(minutes) as minutes,
        sum(case when is_completed then 1 else 0 end) as completed,
        max(case when is_last_of_day then discipline end) as last_discipline,
        max(case when is_last_of_day then body_focus end) as last_body_focus,
        max(case when is_last_of_day then duration_min end) as last_duration_min,
        max(case when is_last_of_day then platform end) as last_platform,
        max(case when is_last_of_day then instructor_id end) as last_instructor_id,
        {% for p in var('platforms') -%}
        sum(case when platform = '{{ p }}' then 1 else 0 end) as {{ p }}_workouts,
        sum(case when platform = '{{ p }}' then sin(2 * pi() * hour_fraction / 24) else 0 end) as {{ p }}_hour_sin,
        sum(case when platform = '{{ p }}' then cos(2 * pi() * hour_fraction / 24) else 0 end) as {{ p }}_hour_cos,
        {% endfor -%}
        {% for d in var('disciplines') -%}
        sum(case when discipline = '{{ d }}' then 1 else 0 end) as {{ d }}_workouts,
        {% endfor -%}
        bool_or(is_weekend) as is_weekend
    from workouts
    group by user_id, event_date
)

select
    d.user_id,
    d.activity_date,
    cast(d.workouts as integer) as workouts,
    cast(d.minutes as double) as minutes,
    cast(d.completed as integer) as completed,
    d.last_discipline,
    d.last_body_focus,
    d.last_duration_min,
    d.last_platform,
    d.last_instructor_id,
    {% for p in var('platforms') -%}
    cast(d.{{ p }}_workouts as integer) as {{ p }}_workouts,
    cast(d.{{ p }}_hour_sin as double) as {{ p }}_hour_sin,
    cast(d.{{ p }}_hour_cos as double) as {{ p }}_hour_cos,
    {% endfor -%}
    {% for d_ in var('disciplines') -%}
    cast(d.{{ d_ }}_workouts as integer) as {{ d_ }}_workouts,
    {% endfor -%}
    d.is_weekend,
    cast(s.sessions as integer) as sessions,
    cast(s.session_minutes as double) as session_minutes
from daily as d
inner join sessions_daily as s
    on d.user_id = s.user_id and d.activity_date = s.event_date
