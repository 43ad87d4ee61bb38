-- One row per user: the latest version ingest received (a re-sent user keeps its latest landing).
with deduped as (
    {{ latest_per_key(source('bronze', 'users'), ['user_id'], 'landing_date desc, _ingested_at desc') }}
)

select
    cast(user_id as varchar) as user_id,
    {{ utc('signup_ts') }} as signed_up_at,
    cast({{ utc('signup_ts') }} as date) as signup_date,
    cast(birth_year as integer) as birth_year,
    {{ typed(['gender', 'country', 'fitness_level'], 'varchar') }},
    {{ typed(['owns_bike', 'owns_tread'], 'boolean') }},
    landing_date
from deduped
