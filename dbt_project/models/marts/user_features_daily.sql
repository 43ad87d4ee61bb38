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
-- and windowed counts are differences of running totals (7d = total(D) - total(D - 7)):
-- macros/features/point_in_time.sql, shared with the mapped dataset. The fitness-only state
-- (sessions, discipline and instructor affinity, the last workout) joins in by user and day.
{%- set platforms = var('platforms') %}
{%- set disciplines = var('disciplines') %}

with users as (
    select * from {{ ref('stg_app__users') }}
),

spine as (
    {{ entity_date_spine('users', 'signup_date', ref('int_feature_dates_spined')) }}
),

joined as (
    select
        s.*,
        a.activity_date as last_workout_date,
        a.last_discipline,
        a.last_body_focus,
        a.last_duration_min,
        a.last_platform,
        a.last_instructor_id,
        a.last_class_id,
        {{ window_totals('a', 'workouts', ['total', 7, 28]) }},
        {{ window_totals('a', 'minutes', [7, 28]) }},
        {{ window_totals('a', 'completed', [28]) }},
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
        {{ window_totals('e', 'music_likes', ['total', 28]) }},
        {{ window_totals('e', 'bookmarks', ['total', 28]) }}
    from spine as s
    -- point in time: the latest state on or before each date, never after it
    {{ asof_history(ref('int_user_activity_daily'), 'user_id', 'a', [7, 28]) }}
    left join {{ ref('int_user_discipline_affinity') }} as da
        on a.user_id = da.user_id and a.activity_date = da.activity_date
    asof left join {{ ref('int_user_instructor_affinity') }} as i
        on s.user_id = i.user_id and s.feature_date >= i.activity_date
    {{ asof_history(ref('int_user_engagement_daily'), 'user_id', 'e', [28]) }}
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
    {{ smoothed_rate('completed_28d', 'workouts_28d', 'completion_prior') }} as completion_rate_28d,
    cast(feature_date - last_workout_date as integer) as days_since_last_workout,
    -- last workout
    last_discipline,
    last_body_focus,
    cast(last_duration_min as integer) as last_duration_min,
    last_platform,
    last_instructor_id,
    last_class_id,
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
