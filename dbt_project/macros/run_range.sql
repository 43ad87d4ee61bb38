{#-
  Partition semantics shared with orchestration.

  A Dagster daily partition D is "the day whose events landed". A run restricted to an inclusive
  range of partitions gets it either as
  --vars '{"start_date": "YYYY-MM-DD", "end_date": "YYYY-MM-DD"}' (by hand, unit tests), or as the
  environment variables LAKEHOUSE_RUN_START_DATE / LAKEHOUSE_RUN_END_DATE (Dagster). With a range
  the marts compute (and replace) only the dates in it and the incremental intermediate tables
  recompute only from its start on; without one, or with --full-refresh, everything present in
  bronze is computed.

  Why Dagster uses the environment: dbt re-parses the whole project whenever --vars differ from
  the parse's (about 10 s a run). The variables are read only while executing (`execute`), never
  while parsing, so the manifest and its partial-parse file do not depend on the range.
-#}

{% macro run_range() -%}
  {#- [start, end] as 'YYYY-MM-DD' strings when the run is restricted to a range, else none. -#}
  {%- set start = var('start_date', none) -%}
  {%- set end = var('end_date', none) -%}
  {%- if (start is none or start == '') and execute -%}
    {%- set start = env_var('LAKEHOUSE_RUN_START_DATE', '') or none -%}
    {%- set end = env_var('LAKEHOUSE_RUN_END_DATE', '') or none -%}
  {%- endif -%}
  {%- set end = end or start -%}
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


{% macro in_run_range(column) -%}
  {#- Marts: a SQL predicate, `column` within the run's range; true without a range. -#}
  {%- set r = run_range() -%}
  {%- if r is none -%}
    true
  {%- else -%}
    {{ column }} between date '{{ r[0] }}' and date '{{ r[1] }}'
  {%- endif -%}
{%- endmacro %}


{% macro recompute_from() -%}
  {#-
    Incremental INTERMEDIATE tables: the first day (a 'YYYY-MM-DD' string) this run recomputes,
    or none to compute every day. Such tables carry running totals forward, so a range run
    recomputes every day from the range's start on (later days' totals depend on it), and from
    the day after the newest day the table holds if that is earlier (a skipped partition never
    leaves a hole). First build, --full-refresh, no vars, or an empty table: none.
  -#}
  {%- set r = run_range() -%}
  {%- if r is none or not is_incremental() -%}
    {{ return(none) }}
  {%- endif -%}
  {%- if not execute -%}
    {{ return(r[0]) }}
  {%- endif -%}
  {%- set column = model_meta('range_column') -%}
  {%- set result = run_query("select cast(max(" ~ column ~ ") + 1 as varchar) from " ~ this) -%}
  {%- set after_newest = result.columns[0].values()[0] -%}
  {%- if after_newest is none -%}
    {{ return(none) }}
  {%- endif -%}
  {{ return([r[0], after_newest | string] | min) }}
{%- endmacro %}


{% macro days_from(from_date, column, lookback_days=0, landing_column=none) -%}
  {#-
    SQL predicate: `column` on or after from_date (minus lookback_days); true when from_date is
    none. landing_column (staged bronze events): the same bound, with a day of slack, on bronze's
    partition column so only the needed Delta partitions are read (ingest keeps an event's time
    on its landing day).
  -#}
  {%- if from_date is none -%}
    true
  {%- else -%}
    {{ column }} >= date '{{ from_date }}' - {{ lookback_days }}
    {%- if landing_column %} and {{ landing_column }} >= date '{{ from_date }}' - {{ lookback_days + 1 }}{% endif -%}
  {%- endif -%}
{%- endmacro %}


{% macro model_meta(key, default=none) -%}
  {#- A key of the current model's config meta (where this project keeps its own settings). -#}
  {{ return((config.get('meta') or {}).get(key, default)) }}
{%- endmacro %}
