-- One row per user and activity day: the user's most-taken instructor up to the END of that
-- day and how many workouts with them (ASOF-joined on activity_date <= feature_date). Ties go to the instructor who reached the count first,
-- then to the smaller instructor_id (deterministic).
with workouts as (
    select * from {{ ref('int_workouts_enriched') }}
    where instructor_id is not null
),

per_instructor_day as (
    select user_id, instructor_id, event_date, count(*) as workouts
    from workouts
    group by user_id, instructor_id, event_date
),

running as (
    select
        user_id,
        instructor_id,
        event_date,
        sum(workouts) over (
            partition by user_id, instructor_id order by event_date
            rows between unbounded preceding and current row
        ) as instructor_workouts_cum,
        dense_rank() over (order by instructor_id) as instructor_rank
    from per_instructor_day
),

ranked as (
    select
        *,
        -- unique ordering key: more workouts, then reached earlier, then smaller id
        instructor_workouts_cum * 1000000000000
        - (event_date - date '2000-01-01') * 1000000
        - instructor_rank as sort_key
    from running
),

top_so_far as (
    select
        user_id,
        event_date as activity_date,
        arg_max(instructor_id, sort_key) over w as top_instructor_id,
        max(instructor_workouts_cum) over w as top_instructor_workouts
    from ranked
    window w as (
        partition by user_id order by event_date
        range between unbounded preceding and current row
    )
)

select distinct user_id, activity_date, top_instructor_id, top_instructor_workouts
from top_so_far
