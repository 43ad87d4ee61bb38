{{
    config(
        materialized='incremental',
        meta={'range_column': 'event_date', 'carry_forward': true},
    )
}}
-- One row per "take" interaction with its labels and the context of the moment.
-- is_completed: the same user has a "complete" event on the same item the same event_date at or
-- after the take; has_music_like: likewise with "music_like" events (the fitness rule for music
-- likes), so a day's labels are final once the day has landed. Hour and weekday as in
-- int_workouts_enriched (UTC, ISO weekday); every ctx_* column of the interaction follows.
-- Incremental by event_date (see macros/run_range.sql).
{%- set from_date = recompute_from() %}

with interactions as (
    select * from {{ ref('stg_mapped__interactions') }}
    where {{ days_from(from_date, 'event_date') }}
),

followups as (
    select
        user_id,
        item_id,
        event_date,
        max(case when event_type = 'complete' then event_at end) as last_complete_at,
        max(case when event_type = 'music_like' then event_at end) as last_music_like_at
    from interactions
    where event_type in ('complete', 'music_like')
    group by user_id, item_id, event_date
),

takes as (
    select * from interactions
    where event_type = 'take'
)

select
    t.interaction_id,
    t.user_id,
    t.item_id,
    t.platform,
    t.event_at,
    t.event_date,
    cast(extract(hour from t.event_at) as integer) as hour_of_day,
    cast(isodow(t.event_at) as integer) as day_of_week,
    isodow(t.event_at) in (6, 7) as is_weekend,
    coalesce(f.last_complete_at >= t.event_at, false) as is_completed,
    coalesce(f.last_music_like_at >= t.event_at, false) as has_music_like,
    -- ctx_*: everything else of the staged interaction, rating excluded (a label source)
    t.* exclude (interaction_id, user_id, item_id, platform, event_type, rating, event_at, event_date)
from takes as t
left join followups as f
    on t.user_id = f.user_id
    and t.item_id = f.item_id
    and t.event_date = f.event_date
