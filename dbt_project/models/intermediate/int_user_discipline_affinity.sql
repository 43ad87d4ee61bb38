-- One row per user and activity day: how many workouts of each discipline the user has taken
-- up to the END of that day, and the most-taken discipline (ties: the order of var('disciplines')).
with workouts as (
    select * from {{ ref('int_workouts_enriched') }}
),

daily as (
    select
        user_id,
        event_date as activity_date,
        count(*) as workouts,
        {% for d in var('disciplines') -%}
        sum(case when discipline = '{{ d }}' then 1 else 0 end) as {{ d }}_workouts{{ "," if not loop.last }}
        {% endfor %}
    from workouts
    group by user_id, event_date
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
