-- The feature dates this run computes: the run's range (vars start_date..end_date), or every
-- day from the first to the last event date in bronze (macros/features/feature_dates.sql).
{{ feature_date_spine([[source('bronze', 'mapped_interactions'), 'event_date']]) }}
