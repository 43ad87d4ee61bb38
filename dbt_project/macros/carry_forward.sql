{#-
  Helpers for incremental intermediate tables that carry running totals forward.

  Such a table, keyed by (key columns, date), stores each day's measures and their running
  totals `<measure>_cum`. A run that recomputes the days from from_date on (recompute_from())
  starts every key from its opening balance: the table's latest row before from_date.
  On a full build from_date is none and the totals are plain running sums.
-#}

{% macro opening_balance(relation, key_columns, date_column, from_date) -%}
  {#- The latest row per key strictly before from_date (a SELECT). -#}
  {%- set keys = key_columns | join(', ') -%}
  select t.*
  from {{ relation }} as t
  inner join (
      select {{ keys }}, max({{ date_column }}) as {{ date_column }}
      from {{ relation }}
      where {{ date_column }} < date '{{ from_date }}'
      group by {{ keys }}
  ) as latest using ({{ keys }}, {{ date_column }})
{%- endmacro %}


{% macro running_total(measure, from_date, source_alias, opening_alias='opening', type='integer') -%}
  {#- `<measure>_cum`: the running sum over the window named `running`, plus the opening balance. -#}
  cast(
    {%- if from_date is not none %}coalesce({{ opening_alias }}.{{ measure }}_cum, 0) + {% endif -%}
    sum({{ source_alias }}.{{ measure }}) over running as {{ type }}) as {{ measure }}_cum
{%- endmacro %}
