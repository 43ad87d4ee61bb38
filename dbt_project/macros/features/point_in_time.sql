{#-
  Point-in-time reads of the running-totals tables (macros/features/running_totals.sql: one row
  per key and activity_date with `<measure>_cum`, the totals at the END of that day), shared by
  both datasets' features marts. The spine is aliased `s` (key, feature_date).

  asof_history(history, key, alias, lags): ASOF joins: `alias` is the key's latest row on or
  before feature_date (its state at the end of that date, never after it), `<alias><n>` its
  latest row on or before feature_date - n, for each n in lags.

  window_totals(alias, measure, windows, name): for each window, `<name>_total` (the total at
  the end of feature_date, 0 before any) or, for a number n, `<name>_<n>d`: the n days ending on
  feature_date, a difference of running totals (total(D) - total(D - n)).

  smoothed_rate(hits, trials, prior): (hits + w * prior) / (trials + w), w the var
  smoothing_weight and prior the var named `prior`: the prior itself without trials.
-#}

{% macro asof_history(history, key, alias, lags=[]) -%}
    asof left join {{ history }} as {{ alias }}
        on s.{{ key }} = {{ alias }}.{{ key }} and s.feature_date >= {{ alias }}.activity_date
    {%- for n in lags %}
    asof left join {{ history }} as {{ alias }}{{ n }}
        on s.{{ key }} = {{ alias }}{{ n }}.{{ key }} and s.feature_date - {{ n }} >= {{ alias }}{{ n }}.activity_date
    {%- endfor %}
{%- endmacro %}


{% macro window_totals(alias, measure, windows, name=none) -%}
    {%- set name = name or measure -%}
    {%- for n in windows -%}
        {%- if n == 'total' -%}
        coalesce({{ alias }}.{{ measure }}_cum, 0) as {{ name }}_total
        {%- else -%}
        coalesce({{ alias }}.{{ measure }}_cum, 0) - coalesce({{ alias }}{{ n }}.{{ measure }}_cum, 0) as {{ name }}_{{ n }}d
        {%- endif -%}
        {{ ", " if not loop.last }}
    {%- endfor -%}
{%- endmacro %}


{% macro smoothed_rate(hits, trials, prior) -%}
    {%- set w = var('smoothing_weight') -%}
    cast(({{ hits }} + {{ w }} * {{ var(prior) }}) / ({{ trials }} + {{ w }}) as double)
{%- endmacro %}
