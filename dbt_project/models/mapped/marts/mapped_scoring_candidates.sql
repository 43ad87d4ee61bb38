{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'name': 'scoring_candidates', 'partition_by': 'feature_date'},
        },
    )
}}
-- The mapped dataset's scoring candidates (gold scoring_candidates): one row per (feature_date,
-- platform, class_id), the items a platform can recommend on serve_date = feature_date + 1,
-- i.e. first seen on that platform by the end of feature_date.
with dates as (
    select feature_date from {{ ref('int_mapped_feature_dates_spined') }}
),

availability as (
    select * from {{ ref('int_mapped_item_availability') }}
)

select
    d.feature_date,
    cast(d.feature_date + 1 as date) as serve_date,
    a.platform,
    a.item_id as class_id
from dates as d
inner join availability as a on a.first_seen_date <= d.feature_date
