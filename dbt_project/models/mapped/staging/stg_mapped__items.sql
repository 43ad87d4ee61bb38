-- One row per item of the mapping's items table: item_id and every item_attr_<name> column as the
-- import typed it (none when the mapping has no items table: the key column alone). A static
-- snapshot, overwritten on each import: attributes are today's, on every feature date.
with source as (
    -- the metadata columns may be absent from a key-only table: add them (NULL) if so
    select cast(null as varchar) as _source_file, cast(null as timestamptz) as _ingested_at where false
    union all by name
    select * from {{ source('bronze', 'mapped_items') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (partition by item_id order by _ingested_at desc) = 1
)

select
    cast(item_id as varchar) as item_id,
    -- the rest: item_attr_* (bronze contract)
    * exclude (item_id, _source_file, _ingested_at)
from deduped
