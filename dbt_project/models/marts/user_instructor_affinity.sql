{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'partition_by': 'feature_date'},
        },
    )
}}
-- One row per (feature_date, user_id, instructor_id) for every instructor the user took a class
-- with in the 56 days up to the END of feature_date: how many workouts, and their share of the
-- user's workouts in that window. Most users take most classes with one to three favourite
-- instructors; this is the model's user x instructor affinity (looked up per candidate class).
{%- set window_days = 56 %}  {#- the column names say 56d #}

with dates as (
    select feature_date from {{ ref('int_feature_dates_spined') }}
),

daily as (
    select user_id, instructor_id, event_date, count(*) as workouts
    from {{ ref('int_workouts_enriched') }}
    where instructor_id is not null
      and event_date >= (select min(feature_date) from dates) - {{ window_days - 1 }}
      and event_date <= (select max(feature_date) from dates)
    group by user_id, instructor_id, event_date
),

windowed as (
    select d.feature_date, w.user_id, w.instructor_id, sum(w.workouts) as workouts_56d
    from dates as d
    inner join daily as w
        on w.event_date <= d.feature_date
        and w.event_date > d.feature_date - {{ window_days }}
    group by d.feature_date, w.user_id, w.instructor_id
)

select
    feature_date,
    user_id,
    instructor_id,
    cast(workouts_56d as integer) as workouts_56d,
    cast(workouts_56d as double)
        / sum(workouts_56d) over (partition by feature_date, user_id) as share_56d
from windowed
