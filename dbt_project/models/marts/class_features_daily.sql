{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'partition_by': 'feature_date'},
        },
    )
}}
-- One row per (class_id, feature_date) for every class released by the end of feature_date:
-- catalogue metadata plus popularity at the END of feature_date (events dated <= feature_date).
{%- set w = var('smoothing_weight') %}

with dates as (
    select feature_date from {{ ref('int_feature_dates_spined') }}
),

classes as (
    select * from {{ ref('stg_app__classes') }}
),

spine as (
    select
        c.*,
        d.feature_date,
        d.feature_date - 1 as date_minus_1,
        d.feature_date - 7 as date_minus_7,
        d.feature_date - 28 as date_minus_28
    from classes as c
    inner join dates as d on c.release_date <= d.feature_date
),

popularity as (
    select * from {{ ref('int_class_popularity_daily') }}
),

joined as (
    select
        s.*,
        coalesce(p.workouts_cum, 0) as workouts_total,
        coalesce(p.workouts_cum, 0) - coalesce(p1.workouts_cum, 0) as workouts_1d,
        coalesce(p.workouts_cum, 0) - coalesce(p7.workouts_cum, 0) as workouts_7d,
        coalesce(p.workouts_cum, 0) - coalesce(p28.workouts_cum, 0) as workouts_28d,
        coalesce(p.completed_cum, 0) as completed_total,
        coalesce(p.music_likes_cum, 0) as music_likes_total,
        coalesce(p.bookmarks_cum, 0) - coalesce(p7.bookmarks_cum, 0) as bookmarks_7d,
        coalesce(p.impressions_cum, 0) - coalesce(p7.impressions_cum, 0) as impressions_7d,
        coalesce(p.impressions_taken_cum, 0) - coalesce(p7.impressions_taken_cum, 0) as impressions_taken_7d
    from spine as s
    asof left join popularity as p
        on s.class_id = p.class_id and s.feature_date >= p.activity_date
    asof left join popularity as p1
        on s.class_id = p1.class_id and s.date_minus_1 >= p1.activity_date
    asof left join popularity as p7
        on s.class_id = p7.class_id and s.date_minus_7 >= p7.activity_date
    asof left join popularity as p28
        on s.class_id = p28.class_id and s.date_minus_28 >= p28.activity_date
    where {{ in_run_range('s.feature_date') }}
)

select
    class_id,
    feature_date,
    instructor_id,
    discipline,
    equipment,
    duration_min,
    difficulty,
    body_focus,
    music_genre,
    release_date,
    cast(feature_date - release_date as integer) as age_days,
    cast(workouts_1d as integer) as workouts_1d,
    cast(workouts_7d as integer) as workouts_7d,
    cast(workouts_28d as integer) as workouts_28d,
    cast(workouts_total as integer) as workouts_total,
    cast((completed_total + {{ w }} * {{ var('completion_prior') }}) / (workouts_total + {{ w }}) as double)
        as completion_rate,
    cast((music_likes_total + {{ w }} * {{ var('music_like_prior') }}) / (workouts_total + {{ w }}) as double)
        as music_like_rate,
    cast(bookmarks_7d as integer) as bookmarks_7d,
    cast(impressions_7d as integer) as impressions_7d,
    cast((impressions_taken_7d + {{ w }} * {{ var('take_rate_prior') }}) / (impressions_7d + {{ w }}) as double)
        as take_rate_7d
from joined
