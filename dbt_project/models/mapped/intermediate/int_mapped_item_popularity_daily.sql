{{
    config(
        materialized='incremental',
        meta={'range_column': 'activity_date', 'carry_forward': true},
    )
}}
-- One row per item and day with a take: that day's takes, completed takes and music-liked takes
-- (label rules of int_mapped_takes_labeled) and their running totals at the END of that day
-- (`*_cum`). Popularity windows are differences of running totals (mapped_class_features_daily).
-- Incremental: recomputes from the run's start, from each item's opening balance
-- (macros/features/running_totals.sql).
{%- set from_date = recompute_from() %}
{%- set measures = ['takes', 'completed', 'music_liked'] %}

with days as (
    select
        item_id,
        event_date as activity_date,
        count(*) as takes,
        count(*) filter (where is_completed) as completed,
        count(*) filter (where has_music_like) as music_liked
    from {{ ref('int_mapped_takes_labeled') }}
    where {{ days_from(from_date, 'event_date') }}
    group by item_id, event_date
)

{{ carry_forward_totals('days', 'item_id', measures, from_date) }}
