-- One row per user and day with a music like or a bookmark: that day's counts and the running
-- totals at the END of that day (read point-in-time with an ASOF join).
with likes as (
    select user_id, event_date, count(*) as music_likes, 0 as bookmarks
    from {{ ref('stg_app__music_likes') }}
    group by user_id, event_date
),

bookmarks as (
    select user_id, event_date, 0 as music_likes, count(*) as bookmarks
    from {{ ref('stg_app__bookmarks') }}
    group by user_id, event_date
),

daily as (
    select user_id, event_date as activity_date, sum(music_likes) as music_likes, sum(bookmarks) as bookmarks
    from (select * from likes union all select * from bookmarks) as u
    group by user_id, event_date
)

select
    user_id,
    activity_date,
    music_likes,
    bookmarks,
    sum(music_likes) over w as music_likes_cum,
    sum(bookmarks) over w as bookmarks_cum
from daily
window w as (partition by user_id order by activity_date rows between unbounded preceding and current row)
