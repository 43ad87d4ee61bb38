-- One row per class in the catalogue (a re-sent record keeps its latest landing).
with source as (
    select * from {{ source('bronze', 'classes') }}
),

deduped as (
    select *
    from source
    qualify row_number() over (
        partition by class_id order by landing_date desc, _ingested_at desc
    ) = 1
)

select
    cast(class_id as varchar) as class_id,
    cast(title as varchar) as title,
    cast(instructor_id as varchar) as instructor_id,
    cast(discipline as varchar) as discipline,
    cast(equipment as varchar) as equipment,
    cast(duration_min as integer) as duration_min,
    cast(difficulty as double) as difficulty,
    cast(body_focus as varchar) as body_focus,
    cast(music_genre as varchar) as music_genre,
    cast(release_ts at time zone 'UTC' as timestamp) as released_at,
    cast(cast(release_ts at time zone 'UTC' as timestamp) as date) as release_date,
    landing_date
from deduped
