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
-- share the positive's context (platform, hour, weekday, every ctx_*) and have every label 0;
-- fewer than K candidates -> all of them. Sampling and columns as the fitness training_examples
-- (macros/features/negative_sampling.sql).
--
-- feature_date = event_date - 1: join mapped user/class features on it (point in time).
{%- set positives %}
    select * from {{ ref('int_mapped_takes_labeled') }}
    where {{ in_run_range('event_date') }}
{%- endset %}

{{ training_examples(positives, ref('int_mapped_item_availability'),
                     'item_id', 'first_seen_at', 'items_seen_through',
                     var('negatives_per_positive') | int) }}
