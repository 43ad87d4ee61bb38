-- One row per interaction of the mapped dataset (bronze mapped_interactions), typed; timestamps
-- as naive UTC. Every ctx_<name> column the mapping declared passes through as the import typed
-- it (string or double), by a star expression: no context column is assumed, none is fine.
-- rating is the label source of rating datasets (event_type take / below_threshold), never a
-- feature: downstream models select ctx_* by excluding the known columns, rating included.
-- Dedupe: the latest ingest of each interaction_id. The id hashes event_ts, so a key never spans
-- two event dates; partitioning the window by event_date too lets a filter on event_date reach
-- the Delta scan (a one-day run reads one day of files). Macros: macros/staging.sql.
with source as (
    -- bronze has `rating` only when the mapping declares ratings: a union by name with a typed
    -- empty row adds it (NULL) otherwise, so the columns below always bind
    select cast(null as double) as rating where false
    union all by name
    select * from {{ source('bronze', 'mapped_interactions') }}
),

deduped as (
    {{ latest_per_key('source', ['event_date', 'interaction_id']) }}
)

select
    {{ typed(['interaction_id', 'user_id', 'item_id', 'platform', 'event_type'], 'varchar') }},
    cast(rating as double) as rating,
    {{ utc('event_ts') }} as event_at,
    event_date,
    -- the rest: ctx_* (bronze contract)
    * exclude (
        interaction_id, user_id, item_id, platform, event_type, rating, event_ts, event_date,
        _source_file, _ingested_at
    )
from deduped
