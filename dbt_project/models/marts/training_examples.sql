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
-- never the positive class. Negatives share the positive's context (hour, weekday, the previous
-- same-day workout, position in session) and have every label 0. A workout with fewer than K
-- candidates gets all of them. The sampling (deterministic, without replacement, MD5-based) and
-- the columns are macros/features/negative_sampling.sql, shared with the mapped dataset.
--
-- feature_date = event_date - 1: join user_features_daily and class_features_daily on it
-- (the state at the end of the day before: point-in-time correct).
{%- set positives %}
    select
        workout_id as interaction_id,
        user_id,
        class_id as item_id,
        platform,
        started_at as event_at,
        event_date,
        is_completed,
        has_music_like,
        -- context of the moment
        hour_of_day,
        day_of_week,
        is_weekend,
        prev_discipline,
        prev_body_focus,
        cast(prev_duration_min as integer) as prev_duration_min,
        cast(minutes_since_prev as double) as minutes_since_prev,
        position_in_session
    from {{ ref('int_workouts_enriched') }}
    where {{ in_run_range('event_date') }}
{%- endset %}

{{ training_examples(positives, ref('int_class_platform_availability'),
                     'class_id', 'released_at', 'classes_released_through',
                     var('negatives_per_positive') | int) }}
