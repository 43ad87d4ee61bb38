-- The feature dates this run computes: the run's range (vars start_date..end_date), or every
-- day from the first to the last landing date present in bronze.
{%- set r = run_range() %}

{% if r is not none -%}

select cast(unnest(generate_series(date '{{ r[0] }}', date '{{ r[1] }}', interval 1 day)) as date) as feature_date

{%- else -%}

with landed as (
    -- partition column only: cheap to read from the Delta logs
    select landing_date from {{ source('bronze', 'users') }}
    union all
    select landing_date from {{ source('bronze', 'classes') }}
    union all
    select landing_date from {{ source('bronze', 'workouts') }}
),

bounds as (
    select min(landing_date) as first_date, max(landing_date) as last_date
    from landed
)

select cast(unnest(generate_series(first_date, last_date, interval 1 day)) as date) as feature_date
from bounds
where first_date is not null

{%- endif %}
