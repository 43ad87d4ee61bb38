{{ config(materialized='table') }}
-- Where each item is available: on a platform from its first interaction there (any event type).
-- availability_rank numbers a platform's items in first-seen order (ties by item_id);
-- items_seen_through is how many items the platform had once this one was seen (equal for items
-- first seen at the same instant), which makes "the n items available before time t" a single
-- ASOF lookup (as int_class_platform_availability). A table rebuilt by one narrow scan per run:
-- first sightings only move when history is re-imported, and a later day never renumbers
-- earlier items (they were seen before it).
with first_seen as (
    select platform, item_id, min(event_at) as first_seen_at
    from {{ ref('stg_mapped__interactions') }}
    group by platform, item_id
),

ranked as (
    select
        platform,
        item_id,
        first_seen_at,
        cast(first_seen_at as date) as first_seen_date,
        cast(row_number() over (partition by platform order by first_seen_at, item_id) as integer) as availability_rank
    from first_seen
)

select
    *,
    cast(max(availability_rank) over (partition by platform, first_seen_at) as integer) as items_seen_through
from ranked
