-- One row per bookmark (user, class, time); per landing day the latest ingested
-- (macros/staging.sql).
with deduped as (
    {{ latest_events(source('bronze', 'bookmarks'), 'bookmarked_ts', ['user_id', 'class_id', 'bookmarked_ts']) }}
)

select
    {{ typed(['user_id', 'class_id'], 'varchar') }},
    {{ utc('bookmarked_ts') }} as bookmarked_at,
    event_date,
    landing_date
from deduped
