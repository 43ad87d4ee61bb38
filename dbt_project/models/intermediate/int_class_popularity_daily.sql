-- One row per class and day with any activity on it: that day's workouts, completions, music
-- likes, bookmarks, home-screen impressions and impressions taken, plus running totals at the
-- END of that day. An impression is "taken" when the user starts that class on that platform
-- later the same day (so a day's numbers are final once the day has landed).
with workouts as (
    select * from {{ ref('stg_app__workouts') }}
),

impressions as (
    select * from {{ ref('stg_app__impressions') }}
),

last_start_by_day as (
    select user_id, class_id, platform, event_date, max(started_at) as last_started_at
    from workouts
    group by user_id, class_id, platform, event_date
),

events as (
    select class_id, event_date, 1 as workouts, case when is_completed then 1 else 0 end as completed,
        0 as music_likes, 0 as bookmarks, 0 as impressions, 0 as impressions_taken
    from workouts
    union all
    select class_id, event_date, 0, 0, 1, 0, 0, 0
    from {{ ref('stg_app__music_likes') }}
    union all
    select class_id, event_date, 0, 0, 0, 1, 0, 0
    from {{ ref('stg_app__bookmarks') }}
    union all
    select
        i.class_id, i.event_date, 0, 0, 0, 0, 1,
        case when l.last_started_at >= i.shown_at then 1 else 0 end
    from impressions as i
    left join last_start_by_day as l
        on i.user_id = l.user_id
        and i.class_id = l.class_id
        and i.platform = l.platform
        and i.event_date = l.event_date
),

daily as (
    select
        class_id,
        event_date as activity_date,
        sum(workouts) as workouts,
        sum(completed) as completed,
        sum(music_likes) as music_likes,
        sum(bookmarks) as bookmarks,
        sum(impressions) as impressions,
        sum(impressions_taken) as impressions_taken
    from events
    group by class_id, event_date
)

select
    *,
    sum(workouts) over w as workouts_cum,
    sum(completed) over w as completed_cum,
    sum(music_likes) over w as music_likes_cum,
    sum(bookmarks) over w as bookmarks_cum,
    sum(impressions) over w as impressions_cum,
    sum(impressions_taken) over w as impressions_taken_cum
from daily
window w as (partition by class_id order by activity_date rows between unbounded preceding and current row)
