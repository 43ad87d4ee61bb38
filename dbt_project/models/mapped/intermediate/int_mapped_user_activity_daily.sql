{{
    config(
        materialized='incremental',
        meta={'range_column': 'activity_date', 'carry_forward': true},
    )
}}
-- One row per user and day with any interaction: that day's interactions, takes, completed takes
-- (label rule of int_mapped_takes_labeled), music_like events and takes per UTC hour, the day's
-- last take (last_take_at, last_item_id, last_platform, one last_ctx_<name> per ctx column;
-- null on a day without takes; last_item_id_2 / _3: the day's second and third last takes),
-- and running totals at the END of that day (`*_cum`). Features for a date D
-- read the latest row on or before D (ASOF join): the user's state with nothing after D.
-- Incremental: a range run recomputes its days on, starting from each user's opening balance
-- (macros/features/running_totals.sql).
{%- set from_date = recompute_from() %}
{%- set measures = ['takes', 'completed', 'music_likes'] %}
{%- for h in range(24) %}
{%- do measures.append('takes_hour_' ~ '%02d' | format(h)) %}
{%- endfor %}

with interactions as (
    select user_id, event_date, event_type
    from {{ ref('stg_mapped__interactions') }}
    where {{ days_from(from_date, 'event_date') }}
),

takes as (
    select * from {{ ref('int_mapped_takes_labeled') }}
    where {{ days_from(from_date, 'event_date') }}
),

interaction_counts as (
    select
        user_id,
        event_date as activity_date,
        cast(count(*) as integer) as interactions,
        count(*) filter (where event_type = 'music_like') as music_likes
    from interactions
    group by user_id, event_date
),

take_counts as (
    select
        user_id,
        event_date as activity_date,
        count(*) as takes,
        count(*) filter (where is_completed) as completed,
        {% for h in range(24) -%}
        count(*) filter (where hour_of_day = {{ h }}) as takes_hour_{{ '%02d' | format(h) }}{{ "," if not loop.last }}
        {% endfor %}
    from takes
    group by user_id, event_date
),

last_takes as (
    -- the day's last take (ties: the larger interaction_id): its item, platform and ctx_*
    -- (renamed last_* in one pattern, which always matches `platform`, so no context column is
    -- fine); the recent state also holds the items of the day's second and third last takes
    select
        user_id,
        event_date as activity_date,
        event_at as last_take_at,
        item_id as last_item_id,
        lead(item_id, 1) over latest_first as last_item_id_2,
        lead(item_id, 2) over latest_first as last_item_id_3,
        columns('^(platform|ctx_.+)$') as 'last_\1'
    from takes
    window latest_first as (
        partition by user_id, event_date order by event_at desc, interaction_id desc
    )
    qualify row_number() over latest_first = 1
),

days as (
    select
        i.user_id,
        i.activity_date,
        i.interactions,
        i.music_likes,
        {% for m in measures if m != 'music_likes' -%}
        coalesce(t.{{ m }}, 0) as {{ m }},
        {% endfor -%}
        l.* exclude (user_id, activity_date)
    from interaction_counts as i
    left join take_counts as t
        on i.user_id = t.user_id and i.activity_date = t.activity_date
    left join last_takes as l
        on i.user_id = l.user_id and i.activity_date = l.activity_date
)

-- interactions, the measures, their running totals, then the rest of days (last_take_at,
-- last_platform, last_ctx_*)
{{ carry_forward_totals('days', 'user_id', measures, from_date, leading=['interactions'], rest=true) }}
