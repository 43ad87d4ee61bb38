{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'name': 'user_features_daily', 'partition_by': 'feature_date'},
        },
    )
}}
-- The mapped dataset's user features (gold user_features_daily): one row per (user_id,
-- feature_date) for every user first seen (any interaction) by the end of feature_date, the
-- user's state at the END of feature_date from events dated <= feature_date only. Training joins
-- the row of feature_date = event_date - 1. "Events" are takes.
--
-- How (as the fitness user_features_daily): int_mapped_user_activity_daily holds running totals
-- at the end of every day the user did something; the row for (user, D) takes the latest of
-- those on or before D (ASOF join), and windows are differences of running totals
-- (7d = total(D) - total(D - 7)). last_* come from the latest day with a take.
{%- set w = var('smoothing_weight') %}

with dates as (
    select feature_date from {{ ref('int_mapped_feature_dates_spined') }}
),

activity as (
    select * from {{ ref('int_mapped_user_activity_daily') }}
),

first_seen as (
    select user_id, min(activity_date) as first_seen_date
    from activity
    group by user_id
),

spine as (
    select
        f.user_id,
        f.first_seen_date,
        d.feature_date,
        d.feature_date - 7 as date_minus_7,
        d.feature_date - 28 as date_minus_28
    from first_seen as f
    inner join dates as d on f.first_seen_date <= d.feature_date
    where {{ in_run_range('d.feature_date') }}
),

joined as (
    select
        s.user_id,
        s.feature_date,
        s.first_seen_date,
        coalesce(a.takes_cum, 0) as events_total,
        coalesce(a.takes_cum, 0) - coalesce(a7.takes_cum, 0) as events_7d,
        coalesce(a.takes_cum, 0) - coalesce(a28.takes_cum, 0) as events_28d,
        coalesce(a.completed_cum, 0) - coalesce(a28.completed_cum, 0) as completed_28d,
        coalesce(a.music_likes_cum, 0) - coalesce(a28.music_likes_cum, 0) as music_likes_28d,
        -- the hour with the most takes so far (ties: the earlier hour)
        case when a.takes_cum > 0 then list_position(
            [{% for h in range(24) %}a.takes_hour_{{ '%02d' | format(h) }}_cum{{ ", " if not loop.last }}{% endfor %}],
            greatest({% for h in range(24) %}a.takes_hour_{{ '%02d' | format(h) }}_cum{{ ", " if not loop.last }}{% endfor %})
        ) - 1 end as usual_hour,
        lt.last_take_date,
        -- last_platform, last_ctx_*: the latest take on or before feature_date
        lt.* exclude (user_id, last_take_date)
    from spine as s
    -- point in time: the latest state on or before each date, never after it
    asof left join activity as a
        on s.user_id = a.user_id and s.feature_date >= a.activity_date
    asof left join (select user_id, activity_date, takes_cum from activity) as a7
        on s.user_id = a7.user_id and s.date_minus_7 >= a7.activity_date
    asof left join (select user_id, activity_date, takes_cum, completed_cum, music_likes_cum from activity) as a28
        on s.user_id = a28.user_id and s.date_minus_28 >= a28.activity_date
    asof left join (
        select user_id, activity_date as last_take_date, columns('^(last_platform|last_ctx_.+)$')
        from activity
        where takes > 0
    ) as lt
        on s.user_id = lt.user_id and s.feature_date >= lt.last_take_date
)

select
    j.user_id,
    j.feature_date,
    j.first_seen_date,
    cast(j.feature_date - j.first_seen_date as integer) as days_since_first_seen,
    cast(j.events_total as integer) as events_total,
    cast(j.events_7d as integer) as events_7d,
    cast(j.events_28d as integer) as events_28d,
    cast(j.feature_date - j.last_take_date as integer) as days_since_last_event,
    j.last_platform,
    cast(j.usual_hour as integer) as usual_hour,
    cast((j.completed_28d + {{ w }} * {{ var('mapped_complete_prior') }}) / (j.events_28d + {{ w }}) as double)
        as complete_rate_28d,
    cast(j.music_likes_28d as integer) as music_likes_28d,
    -- last_ctx_*: the rest of joined (none is fine: an empty EXCLUDE rest binds)
    j.* exclude (
        user_id, feature_date, first_seen_date, events_total, events_7d, events_28d,
        completed_28d, music_likes_28d, usual_hour, last_take_date, last_platform
    ),
    -- user_attr_* (static: the latest users snapshot)
    u.* exclude (user_id)
from joined as j
left join {{ ref('stg_mapped__users') }} as u on j.user_id = u.user_id
