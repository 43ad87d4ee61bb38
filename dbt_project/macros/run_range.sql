{#-
  Partition semantics shared with orchestration.

  A Dagster daily partition D is "the day whose events landed". Dagster passes
  --vars '{"start_date": "YYYY-MM-DD", "end_date": "YYYY-MM-DD"}' (an inclusive range of
  partitions). With those vars every mart computes (and replaces) only the dates in the range;
  without them, or with --full-refresh, it computes every date present in bronze.
-#}

{% macro run_range() -%}
  {#- [start, end] as 'YYYY-MM-DD' strings when the run is restricted to a range, else none. -#}
  {%- set start = var('start_date', none) -%}
  {%- set end = var('end_date', none) or start -%}
  {%- if start is none or start == '' or should_full_refresh() -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set start = start | string -%}
  {%- set end = end | string -%}
  {%- set iso = modules.re.compile('^\d{4}-\d{2}-\d{2}$') -%}
  {%- if not iso.match(start) or not iso.match(end) -%}
    {{ exceptions.raise_compiler_error("start_date/end_date must be YYYY-MM-DD, got " ~ start ~ " / " ~ end) }}
  {%- endif -%}
  {%- if end < start -%}
    {{ exceptions.raise_compiler_error("end_date " ~ end ~ " is before start_date " ~ start) }}
  {%- endif -%}
  {{ return([start, end]) }}
{%- endmacro %}


{% macro in_run_range(column, lookback_days=0) -%}
  {#- SQL predicate: column within the run's range (widened back by lookback_days); true without one. -#}
  {%- set r = run_range() -%}
  {%- if r is none -%}
    true
  {%- elif lookback_days -%}
    {{ column }} between date '{{ r[0] }}' - interval {{ lookback_days }} day and date '{{ r[1] }}'
  {%- else -%}
    {{ column }} between date '{{ r[0] }}' and date '{{ r[1] }}'
  {%- endif -%}
{%- endmacro %}


{% macro incremental_days(column, lookback_days=0) -%}
  {#-
    Which days an incremental INTERMEDIATE table (re)computes, as a SQL predicate on `column`:
    - first build, --full-refresh, or no vars: every day (true);
    - a range run on an existing table: the run's range, plus every day newer than the newest
      day the table holds (`range_column`), so a skipped partition never leaves a hole in the
      history that cumulative features are summed over.
    lookback_days widens both bounds back (for windows that need the previous day as context).
  -#}
  {%- set r = run_range() -%}
  {%- if r is none or not is_incremental() -%}
    true
  {%- else -%}
    ({{ column }} between date '{{ r[0] }}' - {{ lookback_days }} and date '{{ r[1] }}'
      or {{ column }} > (
        select coalesce(max({{ config.get('range_column') }}), date '1900-01-01') from {{ this }}
      ) - {{ lookback_days }})
  {%- endif -%}
{%- endmacro %}
