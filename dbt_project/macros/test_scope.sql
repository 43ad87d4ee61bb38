{#-
  Data tests in a range run look at the run's days only.

  dbt wraps the model every generic data test reads in get_where_subquery(). This override
  adds, when Dagster passes start_date/end_date, a filter on the tested model's
  meta.range_column: the run's range for marts and staged events, every day from start_date on
  for intermediate tables with meta.carry_forward (they recompute from there). A full build
  (no vars) tests every row. A test's own `where` config still applies.
-#}
{% macro get_where_subquery(relation) -%}
  {%- set where = config.get('where', '') -%}
  {%- set conditions = [] -%}
  {%- if where -%}
    {%- do conditions.append('(' ~ where ~ ')') -%}
  {%- endif -%}
  {%- set r = run_range() -%}
  {%- set attached = model.get('attached_node') if model is mapping else none -%}
  {%- if r is not none and attached and attached in graph.nodes -%}
    {%- set meta = graph.nodes[attached].config.meta or {} -%}
    {%- set column = meta.get('range_column') -%}
    {%- if column and meta.get('carry_forward') -%}
      {%- do conditions.append(column ~ " >= date '" ~ r[0] ~ "'") -%}
    {%- elif column -%}
      {%- do conditions.append(column ~ " between date '" ~ r[0] ~ "' and date '" ~ r[1] ~ "'") -%}
    {%- endif -%}
  {%- endif -%}
  {%- if conditions -%}
    {%- do return("(select * from " ~ relation ~ " where " ~ conditions | join(' and ') ~ ") dbt_subquery") -%}
  {%- else -%}
    {%- do return(relation) -%}
  {%- endif -%}
{%- endmacro %}
