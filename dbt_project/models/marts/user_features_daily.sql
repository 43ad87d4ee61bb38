{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'partition_by': 'feature_date'},
        },
    )
}}
-- One row per (user_id, feature_date) for every user signed up by the end of feature_date:
-- the user's state at the END of feature_date, from events dated <= feature_date only.
-- Training joins the row of feature_date = event_date - 1 (strictly before the event's day).
--
-- How: the intermediate tables hold each user's running totals at the end of every day they
-- did something; the row for (user, D) takes the latest of those on or before D (ASOF join),
-- and windowed counts are differences of running totals (7d = total(D) - total(D - 7)).
{%- set w = var('smoothing_weight') %}
{%- set platforms = var('platforms') %}
{%- set disciplines = var('disciplines') %}

with dates as (
    select feature_date from {{ ref('int_feature_dates_spined') }}
),

users as (
    select * from {{ ref('stg_app__users') }}
),

spine as (
    select
        u.user_id,
        u.fitness_level,
        u.birth_year,
        u.gender,
        u.country,
        u.owns_bike,
        u.owns_tread,
        u.signup_date,
        d.feature_date,
        d.feature_date - 7 as date_minus_7,
        d.feature_date - 28 as date_minus_28
    from users as u
    inner join dates as d on u.signup_date <= d.feature_date
),

activity as (
    select * from {{ ref('int_user_activity_daily') }}
),

engagement as (
    select * from {{ ref('int_user_engagement_daily') }}
),

joined as (
    select
        s.* exclude (date_minus_7, date_minus_28),
        a.activity_date as last_workout_date,
        a.last_discipline,
        a.last_body_focus,
        a.last_duration_min,
        a.last_platform,
        a.last_instructor_id,
        coalesce(a.workouts_cum, 0) as workouts_total,
        coalesce(a.workouts_cum, 0) - coalesce(a7.workouts_cum, 0) as workouts_7d,
        coalesce(a.workouts_cum, 0) - coalesce(a28.workouts_cum, 0) as workouts_28d,
        coalesce(a.minutes_cum, 0) - coalesce(a7.minutes_cum, 0) as minutes_7d,
        coalesce(a.minutes_cum, 0) - coalesce(a28.minutes_cum, 0) as minutes_28d,
        coalesce(a.completed_cum, 0) - coalesce(a28.completed_cum, 0) as completed_28d,
        {% for p in platforms -%}
        a.{{ p }}_workouts_cum,
        a.{{ p }}_hour_sin_cum,
        a.{{ p }}_hour_cos_cum,
        {% endfor -%}
        a.weekday_sessions_cum,
        a.weekday_session_minutes_cum,
        a.weekend_sessions_cum,
        a.weekend_session_minutes_cum,
        i.top_instructor_id,
        i.top_instructor_workouts,
        da.top_discipline,
        {% for d in disciplines -%}
        da.share_{{ d }},
        {% endfor -%}
        coalesce(e.music_likes_cum, 0) as music_likes_total,
        coalesce(e.music_likes_cum, 0) - coalesce(e28.music_likes_cum, 0) as music_likes_28d,
        coalesce(e.bookmarks_cum, 0) as bookmarks_total,
        coalesce(e.bookmarks_cum, 0) - coalesce(e28.bookmarks_cum, 0) as bookmarks_28d
    from spine as s
    -- point in time: the latest state on or before each date, never after it
    asof left join activity as a
        on s.user_id = a.user_id and s.feature_date >= a.activity_date
    asof left join (select user_id, activity_date, workouts_cum, minutes_cum from activity) as a7
        on s.user_id = a7.user_id and s.date_minus_7 >= a7.activity_date
    asof left join (select user_id, activity_date, workouts_cum, minutes_cum, completed_cum from activity) as a28
        on s.user_id = a28.user_id and s.date_minus_28 >= a28.activity_date
    left join {{ ref('int_user_discipline_affinity') }} as da
        on a.user_id = da.user_id and a.activity_date = da.activity_date
    asof left join {{ ref('int_user_instructor_affinity') }} as i
        on s.user_id = i.user_id and s.feature_date >= i.activity_date
    asof left join engagement as e
        on s.user_id = e.user_id and s.feature_date >= e.activity_date
    asof left join (select user_id, activity_date, music_likes_cum, bookmarks_cum from engagement) as e28
        on s.user_id = e28.user_id and s.date_minus_28 >= e28.activity_date
    where {{ in_run_range('s.feature_date') }}
)

select
    user_id,
    feature_date,
    -- static attributes
    fitness_level,
    birth_year,
    gender,
    country,
    owns_bike,
    owns_tread,
    signup_date,
    cast(feature_date - signup_date as integer) as days_since_signup,
    -- activity
    cast(workouts_total as integer) as workouts_total,
    cast(workouts_7d as integer) as workouts_7d,
    cast(workouts_28d as integer) as workouts_28d,
    cast(minutes_7d as double) as minutes_7d,
    cast(minutes_28d as double) as minutes_28d,
    cast((completed_28d + {{ w }} * {{ var('completion_prior') }}) / (workouts_28d + {{ w }}) as double)
        as completion_rate_28d,
    cast(feature_date - last_workout_date as integer) as days_since_last_workout,
    -- last workout
    last_discipline,
    last_body_focus,
    cast(last_duration_min as integer) as last_duration_min,
    last_platform,
    last_instructor_id,
    last_workout_date,
    -- affinities
    top_instructor_id,
    cast(top_instructor_workouts as double) / nullif(workouts_total, 0) as top_instructor_share,
    top_discipline,
    {% for d in disciplines -%}
    cast(coalesce(share_{{ d }}, 0) as double) as share_{{ d }},
    {% endfor -%}
    -- habits: circular mean of the start hour per platform (null until a workout there)
    {% for p in platforms -%}
    cast(case when {{ p }}_workouts_cum > 0
        then round(mod(atan2({{ p }}_hour_sin_cum, {{ p }}_hour_cos_cum) * 12 / pi() + 24, 24), 2)
    end as double) as usual_hour_{{ p }},
    {% endfor -%}
    cast(weekday_session_minutes_cum / nullif(weekday_sessions_cum, 0) as double) as session_minutes_weekday,
    cast(weekend_session_minutes_cum / nullif(weekend_sessions_cum, 0) as double) as session_minutes_weekend,
    -- engagement
    cast(music_likes_total as integer) as music_likes_total,
    cast(music_likes_28d as integer) as music_likes_28d,
    cast(bookmarks_total as integer) as bookmarks_total,
    cast(bookmarks_28d as integer) as bookmarks_28d
from joined
