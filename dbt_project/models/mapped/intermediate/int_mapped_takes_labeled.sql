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
-- int_workouts_enriched (UTC, ISO weekday): macros/features/interactions.sql. Every ctx_* column
-- of the interaction follows. Incremental by event_date (see macros/run_range.sql).
{%- set from_date = recompute_from() %}

with interactions as (
    select *
    from {{ ref('stg_mapped__interactions') }}
    where {{ days_from(from_date, 'event_date') }}
),

followups as (
    {{ last_per_day('interactions', 'item_id', 'event_at', ['complete', 'music_like'], kind_column='event_type') }}
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
    {{ moment_context('t.event_at') }},
    {{ followed_same_day('f', 'complete', 't.event_at') }} as is_completed,
    {{ followed_same_day('f', 'music_like', 't.event_at') }} as has_music_like,
    -- ctx_*: everything else of the staged interaction, rating excluded (a label source)
    t.* exclude (interaction_id, user_id, item_id, platform, event_type, rating, event_at, event_date)
from takes as t
left join followups as f
    on t.user_id = f.user_id
    and t.item_id = f.item_id
    and t.event_date = f.event_date
