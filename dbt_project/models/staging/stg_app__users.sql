-- One row per user: the latest version ingest received (a re-sent user keeps its latest landing).
with source as (
    select * from {{ source('bronze', 'users') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by user_id order by landing_date desc, _ingested_at desc
    ) = 1
)

select
    cast(user_id as varchar) as user_id,
    cast(signup_ts at time zone 'UTC' as timestamp) as signed_up_at,
    cast(cast(signup_ts at time zone 'UTC' as timestamp) as date) as signup_date,
    cast(birth_year as integer) as birth_year,
    cast(gender as varchar) as gender,
    cast(country as varchar) as country,
    cast(fitness_level as varchar) as fitness_level,
    cast(owns_bike as boolean) as owns_bike,
    cast(owns_tread as boolean) as owns_tread,
    landing_date
from deduped
