-- One row per user and activity day: the user's discipline mix up to the END of that day
-- (share of each discipline among all their workouts so far) and the most-taken discipline
-- (ties: the order of var('disciplines')). Computed from int_user_activity_daily's running
-- totals; read point-in-time at the latest activity_date <= feature_date.
{%- set disciplines = var('disciplines') %}

select
    user_id,
    activity_date,
    workouts_cum,
    {% for d in disciplines -%}
    cast({{ d }}_workouts_cum as double) / nullif(workouts_cum, 0) as share_{{ d }},
    {% endfor -%}
    case
        {% for d in disciplines -%}
        when {{ d }}_workouts_cum > 0 and {{ d }}_workouts_cum = greatest(
            {%- for d2 in disciplines %}{{ d2 }}_workouts_cum{{ ", " if not loop.last }}{% endfor -%}
        ) then '{{ d }}'
        {% endfor -%}
    end as top_discipline
from {{ ref('int_user_activity_daily') }}
