-- One row per user and activity day: how many workouts of each discipline the user has taken
-- up to the END of that day, and the most-taken one (ties: the order of var('disciplines')).
-- Read point-in-time with an ASOF join on activity_date <= feature_date.
with daily as (
    select * from {{ ref('int_user_activity_daily') }}
),

running as (
    select
        user_id,
        activity_date,
        sum(workouts) over w as workouts_cum,
        {% for d in var('disciplines') -%}
        sum({{ d }}_workouts) over w as {{ d }}_workouts_cum{{ "," if not loop.last }}
        {% endfor %}
    from daily
    window w as (partition by user_id order by activity_date rows between unbounded preceding and current row)
)

select
    *,
    case
        {% for d in var('disciplines') -%}
        when {{ d }}_workouts_cum > 0 and {{ d }}_workouts_cum = greatest(
            {%- for d2 in var('disciplines') %}{{ d2 }}_workouts_cum{{ ", " if not loop.last }}{% endfor -%}
        ) then '{{ d }}'
        {% endfor -%}
    end as top_discipline
from running
