-- One row per music like (user, class, time); per landing day the latest ingested
-- (macros/staging.sql).
with deduped as (
    {{ latest_events(source('bronze', 'music_likes'), 'liked_ts', ['user_id', 'class_id', 'liked_ts']) }}
)

select
    {{ typed(['user_id', 'class_id'], 'varchar') }},
    {{ utc('liked_ts') }} as liked_at,
    event_date,
    landing_date
from deduped
