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
-- read point in time from int_mapped_item_popularity_daily's running totals
-- (macros/features/point_in_time.sql), plus every item_attr_* column. Rates are per take,
-- smoothed toward the mapped priors with smoothing_weight pseudo-takes (a new item gets the prior).
with items as (
    select item_id, min(first_seen_date) as release_date
    from {{ ref('int_mapped_item_availability') }}
    group by item_id
),

spine as (
    {{ entity_date_spine('items', 'release_date', ref('int_mapped_feature_dates_spined')) }}
),

joined as (
    select
        s.*,
        {{ window_totals('p', 'takes', [1, 7, 28, 'total'], name='events') }},
        {{ window_totals('p', 'completed', ['total']) }},
        {{ window_totals('p', 'music_liked', ['total']) }}
    from spine as s
    {{ asof_history(ref('int_mapped_item_popularity_daily'), 'item_id', 'p', [1, 7, 28]) }}
)

select
    j.item_id as class_id,
    j.feature_date,
    j.release_date,
    cast(j.feature_date - j.release_date as integer) as age_days,
    {%- for n in ['1d', '7d', '28d', 'total'] %}
    cast(j.events_{{ n }} as integer) as events_{{ n }},
    {%- endfor %}
    {{ smoothed_rate('j.completed_total', 'j.events_total', 'mapped_complete_prior') }} as complete_rate,
    {{ smoothed_rate('j.music_liked_total', 'j.events_total', 'mapped_music_like_prior') }} as music_like_rate,
    -- item_attr_* (static: the latest items snapshot)
    i.* exclude (item_id)
from joined as j
left join {{ ref('stg_mapped__items') }} as i on j.item_id = i.item_id
