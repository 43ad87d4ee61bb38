{#-
  Hashes that are the same on every engine version and machine (DuckDB's hash() is not
  guaranteed stable across releases), built on MD5.

  stable_hash(expr): a non-negative BIGINT, the first 60 bits of md5(expr).
  hex_slice_int(md5_hex, i): the i-th (0-based) 24-bit slice of an md5 hex string as an
  integer; one MD5 gives five independent 24-bit draws (i = 0..4).
-#}
{% macro stable_hash(expr) -%}
  {{ return(adapter.dispatch('stable_hash')(expr)) }}
{%- endmacro %}

{% macro default__stable_hash(expr) -%}
  cast(('0x' || substr(md5(cast({{ expr }} as varchar)), 1, 15)) as bigint)
{%- endmacro %}

{% macro hex_slice_int(md5_hex, i) -%}
  cast(('0x' || substr({{ md5_hex }}, 1 + 6 * ({{ i }}), 6)) as bigint)
{%- endmacro %}
