{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'name': 'class_features_daily', 'partition_by': 'feature_date'},
        },
    )
}}
-- The mapped dataset's item features (gold class_features_daily; class_id is the item): one row
-- per (class_id, feature_date) for every item first seen (any interaction, any platform) by the
-- end of feature_date: its age and take counts/rates using events dated <= feature_date only,
-- plus every item_attr_* column. Rates are per take, smoothed toward the mapped priors with
-- smoothing_weight pseudo-takes (a new item gets the prior).
{%- set w = var('smoothing_weight') %}

with dates as (
    select feature_date from {{ ref('int_mapped_feature_dates_spined') }}
),

items as (
    select item_id, min(first_seen_date) as release_date
    from {{ ref('int_mapped_item_availability') }}
    group by item_id
),

spine as (
    select
        i.item_id,
        i.release_date,
        d.feature_date,
        d.feature_date - 1 as date_minus_1,
        d.feature_date - 7 as date_minus_7,
        d.feature_date - 28 as date_minus_28
    from items as i
    inner join dates as d on i.release_date <= d.feature_date
    where {{ in_run_range('d.feature_date') }}
),

popularity as (
    select * from {{ ref('int_mapped_item_popularity_daily') }}
),

joined as (
    select
        s.item_id,
        s.feature_date,
        s.release_date,
        coalesce(p.takes_cum, 0) as events_total,
        coalesce(p.takes_cum, 0) - coalesce(p1.takes_cum, 0) as events_1d,
        coalesce(p.takes_cum, 0) - coalesce(p7.takes_cum, 0) as events_7d,
        coalesce(p.takes_cum, 0) - coalesce(p28.takes_cum, 0) as events_28d,
        coalesce(p.completed_cum, 0) as completed_total,
        coalesce(p.music_liked_cum, 0) as music_liked_total
    from spine as s
    asof left join popularity as p
        on s.item_id = p.item_id and s.feature_date >= p.activity_date
    asof left join popularity as p1
        on s.item_id = p1.item_id and s.date_minus_1 >= p1.activity_date
    asof left join popularity as p7
        on s.item_id = p7.item_id and s.date_minus_7 >= p7.activity_date
    asof left join popularity as p28
        on s.item_id = p28.item_id and s.date_minus_28 >= p28.activity_date
)

select
    j.item_id as class_id,
    j.feature_date,
    j.release_date,
    cast(j.feature_date - j.release_date as integer) as age_days,
    cast(j.events_1d as integer) as events_1d,
    cast(j.events_7d as integer) as events_7d,
    cast(j.events_28d as integer) as events_28d,
    cast(j.events_total as integer) as events_total,
    cast((j.completed_total + {{ w }} * {{ var('mapped_complete_prior') }}) / (j.events_total + {{ w }}) as double)
        as complete_rate,
    cast((j.music_liked_total + {{ w }} * {{ var('mapped_music_like_prior') }}) / (j.events_total + {{ w }}) as double)
        as music_like_rate,
    -- item_attr_* (static: the latest items snapshot)
    i.* exclude (item_id)
from joined as j
left join {{ ref('stg_mapped__items') }} as i on j.item_id = i.item_id
