{#-
  Incremental intermediate tables that carry running totals forward (both datasets' user
  activity, item popularity and engagement tables).

  Such a table, keyed by (key, activity_date), stores each day's measures and their running
  totals `<measure>_cum` at the END of that day. A run that recomputes the days from from_date
  on (recompute_from()) starts every key from its opening balance: the table's latest row
  before from_date. On a full build from_date is none and the totals are plain running sums.
  The marts read them point in time (macros/features/point_in_time.sql).
-#}

{% macro carry_forward_totals(days, key, measures, from_date, leading=[], rest=false, date_column='activity_date') -%}
  {#-
    The SELECT of such a table from `days` (one row per key and date_column with that day's
    measures): key, date, the `leading` columns of `days`, every measure (cast to its type),
    every `<measure>_cum`, then with `rest` every other column of `days`.
    measures: names (integer) or [name, type] pairs.
  -#}
  {%- set typed = [] -%}
  {%- for m in measures -%}
    {%- do typed.append([m, 'integer'] if m is string else m) -%}
  {%- endfor -%}
  {%- set known = [key, date_column] + leading -%}
  {%- for m, t in typed -%}
    {%- do known.append(m) -%}
  {%- endfor -%}
select
    days.{{ key }},
    days.{{ date_column }},
    {%- for c in leading %}
    days.{{ c }},
    {%- endfor %}
    {%- for m, t in typed %}
    cast(days.{{ m }} as {{ t }}) as {{ m }},
    {%- endfor %}
    {%- for m, t in typed %}
    {{ running_total(m, from_date, 'days', type=t) }}{{ "," if not loop.last or rest }}
    {%- endfor %}
    {%- if rest %}
    days.* exclude ({{ known | join(', ') }})
    {%- endif %}
from {{ days }} as days
{%- if from_date is not none %}
left join (
    {{ opening_balance(this, [key], date_column, from_date) }}
) as opening on days.{{ key }} = opening.{{ key }}
{%- endif %}
window running as (
    partition by days.{{ key }} order by days.{{ date_column }}
    rows between unbounded preceding and current row
)
{%- endmacro %}


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
