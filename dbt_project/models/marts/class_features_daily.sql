{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'partition_by': 'feature_date'},
        },
    )
}}
-- One row per (class_id, feature_date) for every class released by the end of feature_date:
-- catalogue metadata plus popularity at the END of feature_date (events dated <= feature_date),
-- read point in time from int_class_popularity_daily's running totals
-- (macros/features/point_in_time.sql).
with classes as (
    select * from {{ ref('stg_app__classes') }}
),

spine as (
    {{ entity_date_spine('classes', 'release_date', ref('int_feature_dates_spined')) }}
),

joined as (
    select
        s.*,
        {{ window_totals('p', 'workouts', [1, 7, 28, 'total']) }},
        {{ window_totals('p', 'completed', ['total']) }},
        {{ window_totals('p', 'music_likes', ['total']) }},
        {{ window_totals('p', 'bookmarks', [7]) }},
        {{ window_totals('p', 'impressions', [7]) }},
        {{ window_totals('p', 'impressions_taken', [7]) }}
    from spine as s
    {{ asof_history(ref('int_class_popularity_daily'), 'class_id', 'p', [1, 7, 28]) }}
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
    {{ smoothed_rate('completed_total', 'workouts_total', 'completion_prior') }} as completion_rate,
    {{ smoothed_rate('music_likes_total', 'workouts_total', 'music_like_prior') }} as music_like_rate,
    cast(bookmarks_7d as integer) as bookmarks_7d,
    cast(impressions_7d as integer) as impressions_7d,
    {{ smoothed_rate('impressions_taken_7d', 'impressions_7d', 'take_rate_prior') }} as take_rate_7d
from joined
