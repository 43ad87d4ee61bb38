{#-
  The date spines of both datasets' features.

  feature_date_spine(landed): one row per feature_date this run computes: the run's range
  (vars start_date..end_date), or every day from the first to the last date in `landed`, a list
  of [relation, date column] pairs (partition columns: cheap to read from the Delta logs).

  entity_date_spine(entities, since_column, dates): every column of `entities` and feature_date,
  one row per entity and date of `dates` in the run's range on or after the entity's
  `since_column` (a user from sign-up or first interaction, an item from release or first
  sighting): the rows of a features mart.
-#}

{% macro feature_date_spine(landed) -%}
  {%- set r = run_range() -%}
  {%- if r is not none -%}
select cast(unnest(generate_series(date '{{ r[0] }}', date '{{ r[1] }}', interval 1 day)) as date) as feature_date
  {%- else -%}
with landed as (
    {%- for relation, column in landed %}
    select {{ column }} as landed_date from {{ relation }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

bounds as (
    select min(landed_date) as first_date, max(landed_date) as last_date
    from landed
)

select cast(unnest(generate_series(first_date, last_date, interval 1 day)) as date) as feature_date
from bounds
where first_date is not null
  {%- endif -%}
{%- endmacro %}


{% macro entity_date_spine(entities, since_column, dates) -%}
    select
        e.*,
        d.feature_date
    from {{ entities }} as e
    inner join {{ dates }} as d on e.{{ since_column }} <= d.feature_date
    where {{ in_run_range('d.feature_date') }}
{%- endmacro %}
