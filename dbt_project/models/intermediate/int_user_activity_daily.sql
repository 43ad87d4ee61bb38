-- One row per user and day with at least one workout: that day's activity and the user's
-- running (cumulative) totals at the END of that day. Marts read it point-in-time with an
-- ASOF join (latest activity_date <= feature_date); windowed counts are differences of
-- cumulative totals (e.g. last 7 days = cum(D) - cum(D - 7)).
with workouts as (
    select * from {{ ref('int_workouts_enriched') }}
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
        bool_or(is_weekend) as is_weekend
    from workouts
    group by user_id, event_date
),

-- a session that runs past midnight counts as one session per day (no peeking past the day)
session_days as (
    select user_id, event_date, sum(minutes) as session_minutes
    from workouts
    group by user_id, session_id, event_date
),

sessions_daily as (
    select user_id, event_date as activity_date, count(*) as sessions, sum(session_minutes) as session_minutes
    from session_days
    group by user_id, event_date
),

combined as (
    select
        d.*,
        s.sessions,
        s.session_minutes
    from daily as d
    inner join sessions_daily as s
        on d.user_id = s.user_id and d.activity_date = s.activity_date
)

select
    user_id,
    activity_date,
    workouts,
    minutes,
    completed,
    last_discipline,
    last_body_focus,
    last_duration_min,
    last_platform,
    last_instructor_id,
    sum(workouts) over running as workouts_cum,
    sum(minutes) over running as minutes_cum,
    sum(completed) over running as completed_cum,
    {% for p in var('platforms') -%}
    sum({{ p }}_workouts) over running as {{ p }}_workouts_cum,
    sum({{ p }}_hour_sin) over running as {{ p }}_hour_sin_cum,
    sum({{ p }}_hour_cos) over running as {{ p }}_hour_cos_cum,
    {% endfor -%}
    sum(case when is_weekend then 0 else sessions end) over running as weekday_sessions_cum,
    sum(case when is_weekend then 0 else session_minutes end) over running as weekday_session_minutes_cum,
    sum(case when is_weekend then sessions else 0 end) over running as weekend_sessions_cum,
    sum(case when is_weekend then session_minutes else 0 end) over running as weekend_session_minutes_cum
from combined
window running as (
    partition by user_id order by activity_date
    rows between unbounded preceding and current row
)
