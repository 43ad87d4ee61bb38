-- One row per home-screen impression (a class shown to a user on a platform, at a position);
-- per landing day the latest ingested (macros/staging.sql).
with deduped as (
    {{ latest_events(source('bronze', 'impressions'), 'shown_ts', ['impression_id']) }}
)

select
    {{ typed(['impression_id', 'user_id', 'platform'], 'varchar') }},
    {{ utc('shown_ts') }} as shown_at,
    event_date,
    cast(class_id as varchar) as class_id,
    cast(position as integer) as position,
    landing_date
from deduped
