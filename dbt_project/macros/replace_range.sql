{#-
  Custom incremental strategy `replace_range` (used by every mart, see dbt_project.yml).

  Deletes exactly the run's date range from the existing table, on the model's `range_column`
  config, and inserts the freshly computed rows: a rerun of a partition is idempotent even when
  a date produced no rows. Without a range (no vars) the whole table is replaced.
  The first build and --full-refresh create the table from scratch as usual.
-#}
{% macro get_incremental_replace_range_sql(arg_dict) -%}
  {%- set target = arg_dict['target_relation'] -%}
  {%- set source = arg_dict['temp_relation'] -%}
  {%- set column = config.get('range_column') -%}
  {%- if not column -%}
    {{ exceptions.raise_compiler_error("incremental_strategy 'replace_range' needs config range_column on " ~ model.name) }}
  {%- endif -%}
  {%- set cols = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
  {%- set r = run_range() -%}
  delete from {{ target }}
  {%- if r is not none %} where {{ column }} between date '{{ r[0] }}' and date '{{ r[1] }}'{% endif %};
  insert into {{ target }} ({{ cols }})
  select {{ cols }} from {{ source }};
{%- endmacro %}
