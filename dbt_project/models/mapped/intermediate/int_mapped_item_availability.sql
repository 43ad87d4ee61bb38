{{ config(materialized='table') }}
-- Where each item is available: on a platform from its first interaction there (any event type),
-- strictly after it. availability_rank numbers a platform's items in first-seen order (ties by
-- item_id); items_seen_through is how many items the platform had once this one was seen
-- (macros/features/availability.sql). A table rebuilt by one narrow scan per run: first
-- sightings only move when history is re-imported, and a later day never renumbers earlier
-- items (they were seen before it).
with first_seen as (
    select
        platform,
        item_id,
        min(event_at) as first_seen_at,
        cast(min(event_at) as date) as first_seen_date
    from {{ ref('stg_mapped__interactions') }}
    group by platform, item_id
)

{{ availability_ranks('first_seen', 'item_id', 'first_seen_at', 'items_seen_through') }}
