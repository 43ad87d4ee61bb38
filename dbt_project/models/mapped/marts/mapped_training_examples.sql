{{
    config(
        meta={
            'range_column': 'event_date',
            'publish': {'layer': 'gold', 'name': 'training_examples', 'partition_by': 'event_date'},
        },
    )
}}
-- The mapped dataset's training examples (gold training_examples; class_id is the item,
-- workout_id the interaction): one positive per take on event_date plus
-- var('negatives_per_positive') (K) sampled negatives, items the user could have taken instead,
-- i.e. first seen on that platform strictly before the take, never the positive item. Negatives
-- share the positive's context (platform, hour, weekday, every ctx_*) and have every label 0.
--
-- Sampling as the fitness training_examples (deterministic, without replacement): the m
-- candidates (available items minus the positive) are numbered 0..m-1 in first-seen order; the
-- ring is rotated by an MD5 hash of the interaction_id and cut into K equal strata, and negative
-- k takes a hashed position in stratum k; fewer than K candidates -> all of them
-- (macros/negative_sampling.sql, shared with the fitness mart).
--
-- feature_date = event_date - 1: join mapped user/class features on it (point in time).
{%- set k_neg = var('negatives_per_positive') | int %}

with positives as (
    select * from {{ ref('int_mapped_takes_labeled') }}
    where {{ in_run_range('event_date') }}
),

availability as (
    select platform, item_id, first_seen_at, availability_rank, items_seen_through
    from {{ ref('int_mapped_item_availability') }}
),

sized as (
    select
        p.interaction_id,
        p.platform,
        coalesce(pool.items_seen_through, 0) as n_available,
        pos.availability_rank as positive_rank,
        coalesce(pos.availability_rank <= pool.items_seen_through, false) as positive_in_pool,
        md5(p.interaction_id) as draw_md5
    from positives as p
    -- n_available: items first seen on this platform strictly before the take
    asof left join availability as pool
        on p.platform = pool.platform and p.event_at > pool.first_seen_at
    left join availability as pos
        on p.platform = pos.platform and p.item_id = pos.item_id
),

pools as (
    select
        *,
        n_available - case when positive_in_pool then 1 else 0 end as n_candidates
    from sized
),

{{ ring_draws('pools', 'interaction_id', k_neg) }},

negatives as (
    select
        s.interaction_id,
        s.sample_index,
        a.item_id
    from sampled as s
    inner join availability as a
        on a.platform = s.platform
        -- skip the positive's own rank to map a candidate offset onto an availability rank
        and a.availability_rank = s.candidate_offset + 1
            + case when s.positive_in_pool and s.candidate_offset + 1 >= s.positive_rank then 1 else 0 end
),

examples as (
    select
        interaction_id,
        0 as sample_index,
        item_id,
        1 as label_take,
        case when is_completed then 1 else 0 end as label_complete,
        case when has_music_like then 1 else 0 end as label_music_like
    from positives

    union all

    select interaction_id, sample_index, item_id, 0, 0, 0
    from negatives
)

select
    e.interaction_id || ':' || cast(e.sample_index as varchar) as example_id,
    e.interaction_id as workout_id,
    cast(e.sample_index as integer) as sample_index,
    p.event_date,
    cast(p.event_date - 1 as date) as feature_date,
    p.user_id,
    e.item_id as class_id,
    p.platform,
    -- context of the moment
    p.hour_of_day,
    p.day_of_week,
    p.is_weekend,
    -- ctx_*: the rest of the take
    p.* exclude (
        interaction_id, user_id, item_id, platform, event_at, event_date,
        hour_of_day, day_of_week, is_weekend, is_completed, has_music_like
    ),
    -- labels
    cast(e.label_take as integer) as label_take,
    cast(e.label_complete as integer) as label_complete,
    cast(e.label_music_like as integer) as label_music_like,
    e.sample_index > 0 as is_negative
from examples as e
inner join positives as p on e.interaction_id = p.interaction_id
