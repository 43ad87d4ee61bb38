-- The feature dates this run computes: the run's range (vars start_date..end_date), or every
-- day from the first to the last event date present in bronze.
{%- set r = run_range() %}

{% if r is not none -%}

select cast(unnest(generate_series(date '{{ r[0] }}', date '{{ r[1] }}', interval 1 day)) as date) as feature_date

{%- else -%}

with bounds as (
    -- partition column only: cheap to read from the Delta log
    select min(event_date) as first_date, max(event_date) as last_date
    from {{ source('bronze', 'mapped_interactions') }}
)

select cast(unnest(generate_series(first_date, last_date, interval 1 day)) as date) as feature_date
from bounds
where first_date is not null

{%- endif %}
