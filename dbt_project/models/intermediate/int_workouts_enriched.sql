-- Workouts with the class they took, the context of the moment (hour, weekday) and the user's
-- previous workout earlier the same day (only what was known at started_at), plus whether the
-- user liked the class's music during/after it that day.
with workouts as (
    select * from {{ ref('int_workouts_sessionized') }}
),

classes as (
    select * from {{ ref('stg_app__classes') }}
),

likes_by_day as (
    select user_id, class_id, event_date, max(liked_at) as last_liked_at
    from {{ ref('stg_app__music_likes') }}
    group by user_id, class_id, event_date
),

joined as (
    select
        w.*,
        c.instructor_id,
        c.discipline,
        c.equipment,
        c.duration_min,
        c.body_focus,
        c.music_genre,
        coalesce(l.last_liked_at >= w.started_at, false) as has_music_like
    from workouts as w
    left join classes as c on w.class_id = c.class_id
    left join likes_by_day as l
        on w.user_id = l.user_id
        and w.class_id = l.class_id
        and w.event_date = l.event_date
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
    position_in_session,
    instructor_id,
    discipline,
    equipment,
    duration_min,
    body_focus,
    music_genre,
    has_music_like,
    cast(extract(hour from started_at) as integer) as hour_of_day,
    extract(hour from started_at) + extract(minute from started_at) / 60.0 as hour_fraction,
    cast(isodow(started_at) as integer) as day_of_week,
    isodow(started_at) in (6, 7) as is_weekend,
    lag(discipline) over same_day as prev_discipline,
    lag(body_focus) over same_day as prev_body_focus,
    lag(duration_min) over same_day as prev_duration_min,
    greatest(
        date_diff('second', lag(started_at) over same_day, started_at) / 60.0
        - lag(minutes) over same_day,
        0
    ) as minutes_since_prev,
    cast(row_number() over (
        partition by user_id, event_date order by started_at desc, workout_id desc
    ) = 1 as boolean) as is_last_of_day
from joined
window same_day as (partition by user_id, event_date order by started_at, workout_id)
