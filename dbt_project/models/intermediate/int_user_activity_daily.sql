{{
    config(
        materialized='incremental',
        meta={'range_column': 'activity_date', 'carry_forward': true},
    )
}}
-- One row per user and day with at least one workout: that day's activity (counts, minutes,
-- the last workout of the day, per-platform start-hour sums, per-discipline counts, sessions)
-- and the running totals of those measures at the END of that day (`*_cum`). Features for a
-- date D read the latest row on or before D (ASOF join): the user's state with nothing after D.
-- Incremental: a range run recomputes its days on, starting from each user's opening balance
-- (macros/features/running_totals.sql).
{%- set from_date = recompute_from() %}
{%- set measures = [('workouts', 'integer'), ('minutes', 'double'), ('completed', 'integer')] %}
{%- for p in var('platforms') %}
{%- do measures.extend([(p ~ '_workouts', 'integer'), (p ~ '_hour_sin', 'double'), (p ~ '_hour_cos', 'double')]) %}
{%- endfor %}
{%- for d in var('disciplines') %}
{%- do measures.append((d ~ '_workouts', 'integer')) %}
{%- endfor %}
{%- do measures.extend([('weekday_sessions', 'integer'), ('weekday_session_minutes', 'double'),
                        ('weekend_sessions', 'integer'), ('weekend_session_minutes', 'double')]) %}

with workouts as (
    select * from {{ ref('int_workouts_enriched') }}
    where {{ days_from(from_date, 'event_date') }}
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
        cast(max(case when is_last_of_day then duration_min end) as integer) as last_duration_min,
        max(case when is_last_of_day then platform end) as last_platform,
        max(case when is_last_of_day then instructor_id end) as last_instructor_id,
        max(case when is_last_of_day then class_id end) as last_class_id,
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
),

days as (
    select
        d.*,
        case when d.is_weekend then 0 else s.sessions end as weekday_sessions,
        case when d.is_weekend then 0 else s.session_minutes end as weekday_session_minutes,
        case when d.is_weekend then s.sessions else 0 end as weekend_sessions,
        case when d.is_weekend then s.session_minutes else 0 end as weekend_session_minutes
    from daily as d
    inner join sessions_daily as s
        on d.user_id = s.user_id and d.activity_date = s.event_date
)

{{ carry_forward_totals('days', 'user_id', measures, from_date, leading=[
    'last_discipline', 'last_body_focus', 'last_duration_min', 'last_platform', 'last_instructor_id', 'last_class_id', 'is_weekend'
]) }}
