{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'partition_by': 'feature_date'},
        },
    )
}}
-- One row per (feature_date, platform, class_id): the classes a platform can recommend on
-- serve_date = feature_date + 1, i.e. released by the end of feature_date. Batch scoring joins
-- user_features_daily and class_features_daily of the same feature_date.
-- (macros/features/availability.sql)
{{ scoring_candidates(ref('int_feature_dates_spined'), ref('int_class_platform_availability'),
                      'class_id', 'release_date') }}
