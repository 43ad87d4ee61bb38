{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'name': 'scoring_candidates', 'partition_by': 'feature_date'},
        },
    )
}}
-- The mapped dataset's scoring candidates (gold scoring_candidates): one row per (feature_date,
-- platform, class_id), the items a platform can recommend on serve_date = feature_date + 1,
-- i.e. first seen on that platform by the end of feature_date.
-- (macros/features/availability.sql)
{{ scoring_candidates(ref('int_mapped_feature_dates_spined'), ref('int_mapped_item_availability'),
                      'item_id', 'first_seen_date') }}
