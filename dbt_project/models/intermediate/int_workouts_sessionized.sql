-- Workouts grouped into sessions: a new session starts when a workout begins at least
-- var('session_gap_minutes') (30) after the end of the user's previous workout.
with workouts as (
    select * from {{ ref('stg_app__workouts') }}
),

with_previous as (
    select
        *,
        lag(started_at) over by_user as prev_started_at,
        lag(minutes) over by_user as prev_minutes
    from workouts
    window by_user as (partition by user_id order by started_at, workout_id)
),

flagged as (
    select
        *,
        case
            when prev_started_at is null then 1
            when date_diff('second', prev_started_at, started_at) / 60.0 - prev_minutes
                >= {{ var('session_gap_minutes') }} then 1
            else 0
        end as is_session_start
    from with_previous
),

numbered as (
    select
        *,
        sum(is_session_start) over (
            partition by user_id order by started_at, workout_id
            rows between unbounded preceding and current row
        ) as session_number
    from flagged
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
    first_value(workout_id) over by_session as session_id,
    cast(session_number as integer) as session_number,
    cast(row_number() over by_session as integer) as position_in_session
from numbered
window by_session as (partition by user_id, session_number order by started_at, workout_id)
