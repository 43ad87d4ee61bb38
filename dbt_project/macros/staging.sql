{#-
  Staging helpers shared by both datasets' stg_* models.

  latest_per_key(relation, key_columns, order_by): the rows of `relation`, one per key: the
  first in `order_by` (default: the latest ingested).

  latest_events(relation, time_column, key_columns): a bronze event table of the fitness
  landing contract with event_date (the UTC date of time_column), one row per key within a
  landing day (the latest ingested). Ingest quarantines events whose time is not on their
  landing day, so an event key cannot recur on another landing day; deduping per landing day
  lets a filter on landing_date prune Delta partitions, so a one-day run reads one day of files
  instead of sorting the whole table.

  side_table(relation, key): a whole-snapshot side table of the mapped dataset (mapped_users,
  mapped_items): the key as text and every other column of the import (user_attr_*,
  item_attr_*; none when the mapping has no such table: the key column alone), one row per key
  (the latest ingested).

  typed(columns, type): `cast(<c> as <type>) as <c>` for each of the columns.
  utc(column): a bronze TIMESTAMPTZ as naive UTC (the models' timestamps).
-#}
{% macro latest_per_key(relation, key_columns, order_by='_ingested_at desc') -%}
    select *
    from {{ relation }}
    qualify row_number() over (
        partition by {{ key_columns | join(', ') }} order by {{ order_by }}
    ) = 1
{%- endmacro %}


{% macro latest_events(relation, time_column, key_columns) -%}
    select
        *,
        cast({{ time_column }} at time zone 'UTC' as date) as event_date
    from {{ relation }}
    qualify row_number() over (
        partition by landing_date, {{ key_columns | join(', ') }} order by _ingested_at desc
    ) = 1
{%- endmacro %}


{% macro typed(columns, type) -%}
    {%- for c in columns %}cast({{ c }} as {{ type }}) as {{ c }}{{ ", " if not loop.last }}{% endfor -%}
{%- endmacro %}


{% macro utc(column) -%}
    cast({{ column }} at time zone 'UTC' as timestamp)
{%- endmacro %}


{% macro side_table(relation, key) -%}
with source as (
    -- the metadata columns may be absent from a key-only table: add them (NULL) if so
    select cast(null as varchar) as _source_file, cast(null as timestamptz) as _ingested_at where false
    union all by name
    select * from {{ relation }}
),

deduped as (
    {{ latest_per_key('source', [key]) }}
)

select
    cast({{ key }} as varchar) as {{ key }},
    -- the rest: the attributes (bronze contract)
    * exclude ({{ key }}, _source_file, _ingested_at)
from deduped
{%- endmacro %}
