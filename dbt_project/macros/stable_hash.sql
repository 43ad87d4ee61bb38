{#-
  A non-negative BIGINT hash of a string expression that is the same on every engine version and
  machine (DuckDB's hash() is not guaranteed stable across releases): the first 60 bits of MD5.
-#}
{% macro stable_hash(expr) -%}
  {{ return(adapter.dispatch('stable_hash')(expr)) }}
{%- endmacro %}

{% macro default__stable_hash(expr) -%}
  cast(('0x' || substr(md5(cast({{ expr }} as varchar)), 1, 15)) as bigint)
{%- endmacro %}
