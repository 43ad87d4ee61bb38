{{
    config(
        range_column='event_date',
        meta={'publish': {'layer': 'gold', 'partition_by': 'event_date'}},
    )
}}
-- One positive per workout on event_date plus var('negatives_per_positive') (K) sampled
-- negatives: classes the user could have taken instead, i.e. available ON THAT PLATFORM at that
-- moment (released before started_at; bike: equipment bike/none, tread: tread/none, app: all),
-- never the positive class. Negatives share the positive's context and have every label 0.
--
-- Sampling is deterministic and without replacement: the m candidates (available classes minus
-- the positive) are numbered 0..m-1 in release order; the ring is rotated by hash(workout_id, 0)
-- and cut into K equal strata, and negative k takes the hash(workout_id, k)-th class of stratum k.
-- A workout with fewer than K candidates gets all of them (min(K, m) negatives).
--
-- feature_date = event_date - 1: join user_features_daily and class_features_daily on it
-- (the state at the end of the day before: point-in-time correct).
{%- set k_neg = var('negatives_per_positive') | int %}

with positives as (
    select * from {{ ref('int_workouts_enriched') }}
    where {{ in_run_range('event_date') }}
),

availability as (
    select * from {{ ref('int_class_platform_availability') }}
),

pools as (
    -- n_available: classes on this platform released strictly before the workout started
    select
        p.workout_id,
        coalesce(a.classes_released_through, 0) as n_available
    from positives as p
    asof left join availability as a
        on p.platform = a.platform and p.started_at > a.released_at
),

positive_rank as (
    select
        p.workout_id,
        pos.availability_rank as positive_rank
    from positives as p
    left join availability as pos
        on p.platform = pos.platform and p.class_id = pos.class_id
),

sizing as (
    select
        p.workout_id,
        pl.n_available,
        coalesce(r.positive_rank <= pl.n_available, false) as positive_in_pool,
        pl.n_available - case when coalesce(r.positive_rank <= pl.n_available, false) then 1 else 0 end
            as n_candidates,
        r.positive_rank
    from positives as p
    inner join pools as pl on p.workout_id = pl.workout_id
    inner join positive_rank as r on p.workout_id = r.workout_id
),

draws as (
    select
        s.workout_id,
        k.sample_index,
        s.n_candidates,
        s.positive_in_pool,
        s.positive_rank,
        greatest(s.n_candidates // {{ k_neg }}, 1) as stratum_size,
        {{ stable_hash("s.workout_id || '#0'") }} as rotation_hash,
        {{ stable_hash("s.workout_id || '#' || cast(k.sample_index as varchar)") }} as draw_hash
    from sizing as s
    cross join (select cast(unnest(generate_series(1, {{ k_neg }})) as integer) as sample_index) as k
    where k.sample_index <= s.n_candidates
),

sampled as (
    select
        workout_id,
        sample_index,
        -- candidate offset in 0..n_candidates-1, distinct across sample_index
        (rotation_hash % n_candidates
            + (sample_index - 1) * stratum_size
            + draw_hash % stratum_size) % n_candidates as candidate_offset,
        positive_in_pool,
        positive_rank
    from draws
),

negatives as (
    select
        s.workout_id,
        s.sample_index,
        -- skip the positive's own rank to map a candidate offset onto an availability rank
        cast(s.candidate_offset + 1
            + case when s.positive_in_pool and s.candidate_offset + 1 >= s.positive_rank then 1 else 0 end
            as integer) as availability_rank
    from sampled as s
),

examples as (
    select
        p.workout_id,
        0 as sample_index,
        p.class_id,
        1 as label_take,
        case when p.is_completed then 1 else 0 end as label_complete,
        case when p.has_music_like then 1 else 0 end as label_music_like
    from positives as p

    union all

    select
        n.workout_id,
        n.sample_index,
        a.class_id,
        0 as label_take,
        0 as label_complete,
        0 as label_music_like
    from negatives as n
    inner join positives as p on n.workout_id = p.workout_id
    inner join availability as a
        on a.platform = p.platform and a.availability_rank = n.availability_rank
)

select
    e.workout_id || ':' || cast(e.sample_index as varchar) as example_id,
    e.workout_id,
    cast(e.sample_index as integer) as sample_index,
    p.event_date,
    cast(p.event_date - 1 as date) as feature_date,
    p.user_id,
    e.class_id,
    p.platform,
    -- context of the moment
    p.hour_of_day,
    p.day_of_week,
    p.is_weekend,
    p.prev_discipline,
    p.prev_body_focus,
    cast(p.prev_duration_min as integer) as prev_duration_min,
    cast(p.minutes_since_prev as double) as minutes_since_prev,
    p.position_in_session,
    -- labels
    cast(e.label_take as integer) as label_take,
    cast(e.label_complete as integer) as label_complete,
    cast(e.label_music_like as integer) as label_music_like,
    e.sample_index > 0 as is_negative
from examples as e
inner join positives as p on e.workout_id = p.workout_id
