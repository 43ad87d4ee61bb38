{#-
  Custom incremental strategy `replace_range` (every incremental model here, see dbt_project.yml).

  Deletes exactly the days this run recomputed, on the model's `meta.range_column`, then inserts the
  fresh rows, so rerunning a partition is idempotent even when a day produced no rows:
  - marts: the run's range start_date..end_date (in_run_range);
  - intermediate tables with `meta.carry_forward: true`: every day from recompute_from() on.
  Without a range (no vars) the whole table is replaced. The first build and --full-refresh
  create the table from scratch as usual.
-#}
{% macro get_incremental_replace_range_sql(arg_dict) -%}
  {%- set target = arg_dict['target_relation'] -%}
  {%- set source = arg_dict['temp_relation'] -%}
  {%- set column = model_meta('range_column') -%}
  {%- if not column -%}
    {{ exceptions.raise_compiler_error("incremental_strategy 'replace_range' needs meta.range_column in the config of " ~ model.name) }}
  {%- endif -%}
  {%- set cols = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
  {%- if model_meta('carry_forward') -%}
    {%- set from_date = recompute_from() -%}
    delete from {{ target }}
    {%- if from_date is not none %} where {{ column }} >= date '{{ from_date }}'{% endif %};
  {%- else -%}
    {%- set r = run_range() -%}
    delete from {{ target }}
    {%- if r is not none %} where {{ column }} between date '{{ r[0] }}' and date '{{ r[1] }}'{% endif %};
  {%- endif %}
  insert into {{ target }} ({{ cols }})
  select {{ cols }} from {{ source }};
{%- endmacro %}
