-- The feature dates this run computes: the run's range (vars start_date..end_date), or every
-- day from the first to the last landing date of users, classes and workouts in bronze
-- (macros/features/feature_dates.sql).
{{ feature_date_spine([
    [source('bronze', 'users'), 'landing_date'],
    [source('bronze', 'classes'), 'landing_date'],
    [source('bronze', 'workouts'), 'landing_date']
]) }}
