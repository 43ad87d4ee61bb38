{{
    config(
        materialized='incremental',
        meta={'range_column': 'activity_date', 'carry_forward': true},
    )
}}
-- One row per user and day with a workout: the user's most-taken instructor up to the END of
-- that day and how many workouts with them (ties: the smaller instructor_id). Read
-- point-in-time at the latest activity_date on or before a feature date.
-- Incremental: a run recomputes from its start day on. Counts only grow, so the leader after
-- day d is either the leader before the run (the opening leader) or an instructor the user
-- took since; only those are compared.
{%- set from_date = recompute_from() %}

with workouts as (
    select user_id, instructor_id, event_date
    from {{ ref('int_workouts_enriched') }}
    where instructor_id is not null
),

new_days as (
    select user_id, instructor_id, event_date as activity_date, count(*) as workouts
    from workouts
    where {{ days_from(from_date, 'event_date') }}
    group by user_id, instructor_id, event_date
),

{%- if from_date is not none %}

opening_counts as (
    select user_id, instructor_id, count(*) as workouts
    from workouts
    where event_date < date '{{ from_date }}'
    group by user_id, instructor_id
),

opening_leader as (
    select c.user_id, min(c.instructor_id) as instructor_id, max(c.workouts) as workouts
    from opening_counts as c
    inner join (
        select user_id, max(workouts) as workouts from opening_counts group by user_id
    ) as m on c.user_id = m.user_id and c.workouts = m.workouts
    group by c.user_id
),
{%- endif %}

running as (
    select
        n.user_id,
        n.instructor_id,
        n.activity_date,
        {%- if from_date is not none %} coalesce(o.workouts, 0) + {%- endif %}
        sum(n.workouts) over (
            partition by n.user_id, n.instructor_id order by n.activity_date
            rows between unbounded preceding and current row
        ) as instructor_workouts_cum
    from new_days as n
    {%- if from_date is not none %}
    left join opening_counts as o
        on n.user_id = o.user_id and n.instructor_id = o.instructor_id
    {%- endif %}
),

candidates as (
    select user_id, instructor_id, activity_date, instructor_workouts_cum from running
    {%- if from_date is not none %}
    union all
    select user_id, instructor_id, date '{{ from_date }}' - 1, workouts from opening_leader
    {%- endif %}
),

instructor_order as (
    select instructor_id, dense_rank() over (order by instructor_id) as instructor_rank
    from (select distinct instructor_id from candidates) as i
),

leaders as (
    select
        c.user_id,
        c.activity_date,
        -- more workouts first, then the smaller instructor_id
        arg_max(c.instructor_id, c.instructor_workouts_cum * 1000000 - o.instructor_rank) over so_far
            as top_instructor_id,
        max(c.instructor_workouts_cum) over so_far as top_instructor_workouts
    from candidates as c
    inner join instructor_order as o on c.instructor_id = o.instructor_id
    window so_far as (
        partition by c.user_id order by c.activity_date
        range between unbounded preceding and current row
    )
)

select distinct
    user_id,
    activity_date,
    top_instructor_id,
    cast(top_instructor_workouts as integer) as top_instructor_workouts
from leaders
where {{ days_from(from_date, 'activity_date') }}
