-- One row per user of the mapping's users table: user_id and every user_attr_<name> column as the
-- import typed it (none when the mapping has no users table: the key column alone). A static
-- snapshot, overwritten on each import: attributes are today's, on every feature date.
with source as (
    -- the metadata columns may be absent from a key-only table: add them (NULL) if so
    select cast(null as varchar) as _source_file, cast(null as timestamptz) as _ingested_at where false
    union all by name
    select * from {{ source('bronze', 'mapped_users') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (partition by user_id order by _ingested_at desc) = 1
)

select
    cast(user_id as varchar) as user_id,
    -- the rest: user_attr_* (bronze contract)
    * exclude (user_id, _source_file, _ingested_at)
from deduped
