{{
    config(
        meta={
            'range_column': 'event_date',
            'publish': {'layer': 'gold', 'partition_by': 'event_date'},
        },
    )
}}
-- One positive per workout on event_date plus var('negatives_per_positive') (K) sampled
-- negatives: classes the user could have taken instead, i.e. available ON THAT PLATFORM at that
-- moment (released before started_at; bike: equipment bike/none, tread: tread/none, app: all),
-- never the positive class. Negatives share the positive's context and have every label 0.
--
-- Sampling is deterministic and without replacement: the m candidates (available classes minus
-- the positive) are numbered 0..m-1 in release order; the ring is rotated by a hash of the
-- workout_id and cut into K equal strata, and negative k takes a hashed position in stratum k.
-- A workout with fewer than K candidates gets all of them (min(K, m) negatives). Hashes are
-- MD5-based (macros/stable_hash.sql), so the sample is the same on every run and machine. The
-- draws are macros/negative_sampling.sql, shared with the mapped mart.
--
-- feature_date = event_date - 1: join user_features_daily and class_features_daily on it
-- (the state at the end of the day before: point-in-time correct).
{%- set k_neg = var('negatives_per_positive') | int %}

with positives as (
    select
        workout_id,
        user_id,
        class_id,
        platform,
        started_at,
        event_date,
        hour_of_day,
        day_of_week,
        is_weekend,
        prev_discipline,
        prev_body_focus,
        prev_duration_min,
        minutes_since_prev,
        position_in_session,
        is_completed,
        has_music_like
    from {{ ref('int_workouts_enriched') }}
    where {{ in_run_range('event_date') }}
),

availability as (
    select platform, class_id, released_at, availability_rank, classes_released_through
    from {{ ref('int_class_platform_availability') }}
),

sized as (
    select
        p.*,
        coalesce(pool.classes_released_through, 0) as n_available,
        pos.availability_rank as positive_rank,
        coalesce(pos.availability_rank <= pool.classes_released_through, false) as positive_in_pool,
        md5(p.workout_id) as draw_md5
    from positives as p
    -- n_available: classes on this platform released strictly before the workout started
    asof left join availability as pool
        on p.platform = pool.platform and p.started_at > pool.released_at
    left join availability as pos
        on p.platform = pos.platform and p.class_id = pos.class_id
),

pools as (
    select
        *,
        n_available - case when positive_in_pool then 1 else 0 end as n_candidates
    from sized
),

{{ ring_draws('pools', 'workout_id', k_neg, exclude='class_id') }},

negatives as (
    select
        s.* exclude (candidate_offset),
        a.class_id
    from sampled as s
    inner join availability as a
        on a.platform = s.platform
        -- skip the positive's own rank to map a candidate offset onto an availability rank
        and a.availability_rank = s.candidate_offset + 1
            + case when s.positive_in_pool and s.candidate_offset + 1 >= s.positive_rank then 1 else 0 end
),

examples as (
    select
        workout_id, 0 as sample_index, event_date, user_id, class_id, platform,
        hour_of_day, day_of_week, is_weekend, prev_discipline, prev_body_focus, prev_duration_min,
        minutes_since_prev, position_in_session,
        1 as label_take,
        case when is_completed then 1 else 0 end as label_complete,
        case when has_music_like then 1 else 0 end as label_music_like
    from positives

    union all

    select
        workout_id, sample_index, event_date, user_id, class_id, platform,
        hour_of_day, day_of_week, is_weekend, prev_discipline, prev_body_focus, prev_duration_min,
        minutes_since_prev, position_in_session,
        0 as label_take,
        0 as label_complete,
        0 as label_music_like
    from negatives
)

select
    workout_id || ':' || cast(sample_index as varchar) as example_id,
    workout_id,
    cast(sample_index as integer) as sample_index,
    event_date,
    cast(event_date - 1 as date) as feature_date,
    user_id,
    class_id,
    platform,
    -- context of the moment
    hour_of_day,
    day_of_week,
    is_weekend,
    prev_discipline,
    prev_body_focus,
    cast(prev_duration_min as integer) as prev_duration_min,
    cast(minutes_since_prev as double) as minutes_since_prev,
    position_in_session,
    -- labels
    cast(label_take as integer) as label_take,
    cast(label_complete as integer) as label_complete,
    cast(label_music_like as integer) as label_music_like,
    sample_index > 0 as is_negative
from examples
