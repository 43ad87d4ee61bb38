-- One row per instructor (a re-sent record keeps its latest landing).
with deduped as (
    {{ latest_per_key(source('bronze', 'instructors'), ['instructor_id'], 'landing_date desc, _ingested_at desc') }}
)

select
    cast(instructor_id as varchar) as instructor_id,
    cast(name as varchar) as instructor_name,
    cast(primary_discipline as varchar) as primary_discipline,
    {{ utc('joined_ts') }} as joined_at,
    landing_date
from deduped
