{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'partition_by': 'feature_date'},
        },
    )
}}
-- One row per (feature_date, platform, class_id): the classes a platform can recommend on
-- serve_date = feature_date + 1, i.e. released by the end of feature_date. Batch scoring joins
-- user_features_daily and class_features_daily of the same feature_date.
with dates as (
    select feature_date from {{ ref('int_feature_dates_spined') }}
),

availability as (
    select * from {{ ref('int_class_platform_availability') }}
)

select
    d.feature_date,
    cast(d.feature_date + 1 as date) as serve_date,
    a.platform,
    a.class_id
from dates as d
inner join availability as a on a.release_date <= d.feature_date
