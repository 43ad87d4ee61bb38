{{
    config(
        materialized='incremental',
        meta={'range_column': 'event_date', 'carry_forward': true},
    )
}}
-- Sessionized workouts with the class taken, the context of the moment (hour, weekday), the
-- previous same-day class's attributes, and whether the user liked the class's music after
-- starting it that day (the label rule and the context of macros/features/interactions.sql,
-- shared with the mapped takes). Incremental by event_date (see macros/run_range.sql).
{%- set from_date = recompute_from() %}
with workouts as (
    select * from {{ ref('int_workouts_sessionized') }}
    where {{ days_from(from_date, 'event_date') }}
),

classes as (
    select * from {{ ref('stg_app__classes') }}
),

music_likes as (
    select * from {{ ref('stg_app__music_likes') }}
    where {{ days_from(from_date, 'event_date', landing_column='landing_date') }}
),

likes_by_day as (
    {{ last_per_day('music_likes', 'class_id', 'liked_at', ['music_like']) }}
)

select
    w.workout_id,
    w.user_id,
    w.class_id,
    w.platform,
    w.started_at,
    w.event_date,
    w.is_completed,
    w.minutes,
    w.output_kj,
    w.session_id,
    w.position_in_session,
    w.is_last_of_day,
    c.instructor_id,
    c.discipline,
    c.equipment,
    c.duration_min,
    c.body_focus,
    c.music_genre,
    {{ followed_same_day('l', 'music_like', 'w.started_at') }} as has_music_like,
    {{ moment_context('w.started_at') }},
    extract(hour from w.started_at) + extract(minute from w.started_at) / 60.0 as hour_fraction,
    w.prev_class_id,
    pc.discipline as prev_discipline,
    pc.body_focus as prev_body_focus,
    pc.duration_min as prev_duration_min,
    w.minutes_since_prev
from workouts as w
left join classes as c on w.class_id = c.class_id
left join classes as pc on w.prev_class_id = pc.class_id
left join likes_by_day as l
    on w.user_id = l.user_id
    and w.class_id = l.class_id
    and w.event_date = l.event_date
