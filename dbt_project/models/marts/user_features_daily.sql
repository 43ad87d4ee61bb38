{{
    config(
        range_column='feature_date',
        meta={'publish': {'layer': 'gold', 'partition_by': 'feature_date'}},
    )
}}
-- One row per (user_id, feature_date) for every user signed up by the end of feature_date:
-- the user's state at the END of feature_date, from events dated <= feature_date only.
-- Training joins the row of feature_date = event_date - 1 (strictly before the event's day).
--
-- How: `state` holds the user's running totals at the end of every day they did anything;
-- the row for (user, D) is the latest state on or before D (ASOF join), and windowed counts
-- are differences of running totals (last 7 days = total(D) - total(D - 7)).
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
        u.*,
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

days as (
    select user_id, activity_date from activity
    union
    select user_id, activity_date from engagement
),

state as materialized (
    select
        d.user_id,
        d.activity_date,
        sum(coalesce(a.workouts, 0)) over running as workouts_cum,
        sum(coalesce(a.minutes, 0)) over running as minutes_cum,
        sum(coalesce(a.completed, 0)) over running as completed_cum,
        last_value(case when a.workouts > 0 then d.activity_date end ignore nulls) over running
            as last_workout_date,
        last_value(a.last_discipline ignore nulls) over running as last_discipline,
        last_value(a.last_body_focus ignore nulls) over running as last_body_focus,
        last_value(a.last_duration_min ignore nulls) over running as last_duration_min,
        last_value(a.last_platform ignore nulls) over running as last_platform,
        last_value(a.last_instructor_id ignore nulls) over running as last_instructor_id,
        {% for p in platforms -%}
        sum(coalesce(a.{{ p }}_workouts, 0)) over running as {{ p }}_workouts_cum,
        sum(coalesce(a.{{ p }}_hour_sin, 0)) over running as {{ p }}_hour_sin_cum,
        sum(coalesce(a.{{ p }}_hour_cos, 0)) over running as {{ p }}_hour_cos_cum,
        {% endfor -%}
        sum(case when a.is_weekend then 0 else coalesce(a.sessions, 0) end) over running as weekday_sessions_cum,
        sum(case when a.is_weekend then 0 else coalesce(a.session_minutes, 0) end) over running
            as weekday_session_minutes_cum,
        sum(case when a.is_weekend then coalesce(a.sessions, 0) else 0 end) over running as weekend_sessions_cum,
        sum(case when a.is_weekend then coalesce(a.session_minutes, 0) else 0 end) over running
            as weekend_session_minutes_cum,
        last_value(i.top_instructor_id ignore nulls) over running as top_instructor_id,
        last_value(i.top_instructor_workouts ignore nulls) over running as top_instructor_workouts,
        last_value(da.top_discipline ignore nulls) over running as top_discipline,
        {% for d_ in disciplines -%}
        last_value(da.{{ d_ }}_workouts_cum ignore nulls) over running as {{ d_ }}_workouts_cum,
        {% endfor -%}
        sum(coalesce(e.music_likes, 0)) over running as music_likes_cum,
        sum(coalesce(e.bookmarks, 0)) over running as bookmarks_cum
    from days as d
    left join activity as a
        on d.user_id = a.user_id and d.activity_date = a.activity_date
    left join engagement as e
        on d.user_id = e.user_id and d.activity_date = e.activity_date
    left join {{ ref('int_user_instructor_affinity') }} as i
        on d.user_id = i.user_id and d.activity_date = i.activity_date
    left join {{ ref('int_user_discipline_affinity') }} as da
        on d.user_id = da.user_id and d.activity_date = da.activity_date
    window running as (
        partition by d.user_id order by d.activity_date
        rows between unbounded preceding and current row
    )
),

joined as (
    select
        s.user_id,
        s.feature_date,
        s.fitness_level,
        s.birth_year,
        s.gender,
        s.country,
        s.owns_bike,
        s.owns_tread,
        s.signup_date,
        st.* exclude (user_id, activity_date),
        coalesce(st.workouts_cum, 0) - coalesce(s7.workouts_cum, 0) as workouts_7d,
        coalesce(st.workouts_cum, 0) - coalesce(s28.workouts_cum, 0) as workouts_28d,
        coalesce(st.minutes_cum, 0) - coalesce(s7.minutes_cum, 0) as minutes_7d,
        coalesce(st.minutes_cum, 0) - coalesce(s28.minutes_cum, 0) as minutes_28d,
        coalesce(st.completed_cum, 0) - coalesce(s28.completed_cum, 0) as completed_28d,
        coalesce(st.music_likes_cum, 0) - coalesce(s28.music_likes_cum, 0) as music_likes_28d,
        coalesce(st.bookmarks_cum, 0) - coalesce(s28.bookmarks_cum, 0) as bookmarks_28d
    from spine as s
    asof left join state as st
        on s.user_id = st.user_id and s.feature_date >= st.activity_date
    asof left join (select user_id, activity_date, workouts_cum, minutes_cum from state) as s7
        on s.user_id = s7.user_id and s.date_minus_7 >= s7.activity_date
    asof left join (
        select user_id, activity_date, workouts_cum, minutes_cum, completed_cum, music_likes_cum, bookmarks_cum
        from state
    ) as s28
        on s.user_id = s28.user_id and s.date_minus_28 >= s28.activity_date
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
    cast(coalesce(workouts_cum, 0) as integer) as workouts_total,
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
    cast(top_instructor_workouts / nullif(workouts_cum, 0) as double) as top_instructor_share,
    top_discipline,
    {% for d_ in disciplines -%}
    cast(coalesce({{ d_ }}_workouts_cum / nullif(workouts_cum, 0), 0) as double) as share_{{ d_ }},
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
    cast(coalesce(music_likes_cum, 0) as integer) as music_likes_total,
    cast(music_likes_28d as integer) as music_likes_28d,
    cast(coalesce(bookmarks_cum, 0) as integer) as bookmarks_total,
    cast(bookmarks_28d as integer) as bookmarks_28d
from joined
