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
-- (7d = total(D) - total(D - 7)): macros/features/point_in_time.sql. last_* come from the latest
-- day with a take.

with activity as (
    select * from {{ ref('int_mapped_user_activity_daily') }}
),

users as (
    select user_id, min(activity_date) as first_seen_date
    from activity
    group by user_id
),

spine as (
    {{ entity_date_spine('users', 'first_seen_date', ref('int_mapped_feature_dates_spined')) }}
),

joined as (
    select
        s.*,
        {{ window_totals('a', 'takes', ['total', 7, 28], name='events') }},
        {{ window_totals('a', 'completed', [28]) }},
        {{ window_totals('a', 'music_likes', [28]) }},
        -- the hour with the most takes so far (ties: the earlier hour)
        case when a.takes_cum > 0 then list_position(
            [{% for h in range(24) %}a.takes_hour_{{ '%02d' | format(h) }}_cum{{ ", " if not loop.last }}{% endfor %}],
            greatest({% for h in range(24) %}a.takes_hour_{{ '%02d' | format(h) }}_cum{{ ", " if not loop.last }}{% endfor %})
        ) - 1 end as usual_hour,
        lt.last_take_date,
        -- last_platform, last_item_id*, last_ctx_*: the latest take on or before feature_date
        lt.* exclude (user_id, last_take_date)
    from spine as s
    -- point in time: the latest state on or before each date, never after it
    {{ asof_history('activity', 'user_id', 'a', [7, 28]) }}
    asof left join (
        select user_id, activity_date as last_take_date, columns('^(last_platform|last_item_id.*|last_ctx_.+)$')
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
    {{ smoothed_rate('j.completed_28d', 'j.events_28d', 'mapped_complete_prior') }} as complete_rate_28d,
    cast(j.music_likes_28d as integer) as music_likes_28d,
    -- last_item_id, _2, _3 and last_ctx_*: the rest of joined (none is fine: an empty EXCLUDE
    -- rest binds)
    j.* exclude (
        user_id, feature_date, first_seen_date, events_total, events_7d, events_28d,
        completed_28d, music_likes_28d, usual_hour, last_take_date, last_platform
    ),
    -- user_attr_* (static: the latest users snapshot)
    u.* exclude (user_id),
    -- the recent state's attributes: last_item_attr_* of the last item (none without items)
    li.* exclude (last_item_id)
from joined as j
left join {{ ref('stg_mapped__users') }} as u on j.user_id = u.user_id
left join (
    -- one pattern that always matches item_id, so an items table without attributes is fine
    select columns('^(item_id|item_attr_.+)$') as 'last_\1'
    from {{ ref('stg_mapped__items') }}
) as li on j.last_item_id = li.last_item_id
