{{
    config(
        materialized='incremental',
        meta={'range_column': 'event_date', 'carry_forward': true},
    )
}}
-- Workouts grouped into sessions: a new session starts when a workout begins at least
-- var('session_gap_minutes') (30) after the end (start + minutes) of the user's previous workout.
-- session_id is the workout_id of the session's first workout. Also carries the user's previous
-- workout when it was earlier the SAME day (the "recent state" that moment could know).
-- Incremental: a range run recomputes its days on (reading one day before as context).
{%- set from_date = recompute_from() %}

with workouts as (
    select workout_id, user_id, class_id, platform, started_at, event_date, is_completed, minutes, output_kj
    from {{ ref('stg_app__workouts') }}
    where {{ days_from(from_date, 'event_date', lookback_days=1, landing_column='landing_date') }}
),

with_previous as (
    select
        *,
        lag(started_at) over by_user as prev_started_at,
        lag(minutes) over by_user as prev_minutes,
        lag(class_id) over by_user as prev_class_id_any_day,
        lag(event_date) over by_user as prev_event_date,
        lead(event_date) over by_user as next_event_date,
        row_number() over by_user as user_seq
    from workouts
    window by_user as (partition by user_id order by started_at, workout_id)
),

flagged as (
    select
        *,
        date_diff('second', prev_started_at, started_at) / 60.0 - prev_minutes as gap_minutes,
        coalesce(
            date_diff('second', prev_started_at, started_at) / 60.0 - prev_minutes
                >= {{ var('session_gap_minutes') }},
            true
        ) as is_session_start
    from with_previous
),

sessions as (
    select
        *,
        max(case when is_session_start then user_seq end) over running as session_start_seq,
        last_value(case when is_session_start then workout_id end ignore nulls) over running as session_id
    from flagged
    window running as (
        partition by user_id order by started_at, workout_id
        rows between unbounded preceding and current row
    )
)

select
    workout_id,
    user_id,
    class_id,
    platform,
    started_at,
    event_date,
    is_completed,
    minutes,
    output_kj,
    session_id,
    cast(user_seq - session_start_seq + 1 as integer) as position_in_session,
    case when prev_event_date = event_date then prev_class_id_any_day end as prev_class_id,
    case when prev_event_date = event_date then greatest(gap_minutes, 0) end as minutes_since_prev,
    coalesce(next_event_date <> event_date, true) as is_last_of_day
from sessions
where {{ days_from(from_date, 'event_date') }}
