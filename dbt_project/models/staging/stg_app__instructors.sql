-- One row per instructor (a re-sent record keeps its latest landing).
with source as (
    select * from {{ source('bronze', 'instructors') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by instructor_id order by landing_date desc, _ingested_at desc
    ) = 1
)

select
    cast(instructor_id as varchar) as instructor_id,
    cast(name as varchar) as instructor_name,
    cast(primary_discipline as varchar) as primary_discipline,
    cast(joined_ts at time zone 'UTC' as timestamp) as joined_at,
    landing_date
from deduped
