-- One row per class in the catalogue (a re-sent record keeps its latest landing).
with deduped as (
    {{ latest_per_key(source('bronze', 'classes'), ['class_id'], 'landing_date desc, _ingested_at desc') }}
)

select
    {{ typed(['class_id', 'title', 'instructor_id', 'discipline', 'equipment'], 'varchar') }},
    cast(duration_min as integer) as duration_min,
    cast(difficulty as double) as difficulty,
    {{ typed(['body_focus', 'music_genre'], 'varchar') }},
    {{ utc('release_ts') }} as released_at,
    cast({{ utc('release_ts') }} as date) as release_date,
    landing_date
from deduped
