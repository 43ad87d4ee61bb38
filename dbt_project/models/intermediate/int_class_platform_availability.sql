-- Where each class is offered: bike -> equipment bike or none, tread -> tread or none,
-- app -> every class; available strictly after its release. availability_rank numbers a
-- platform's classes in release order; classes_released_through is how many classes that
-- platform had once this one was out (macros/features/availability.sql).
with classes as (
    select * from {{ ref('stg_app__classes') }}
),

platforms as (
    select platform from (values {% for p in var('platforms') %}('{{ p }}'){{ ", " if not loop.last }}{% endfor %}) as t(platform)
),

offered as (
    select
        c.class_id,
        p.platform,
        c.equipment,
        c.released_at,
        c.release_date
    from classes as c
    cross join platforms as p
    where p.platform = 'app' or c.equipment = 'none' or c.equipment = p.platform
)

{{ availability_ranks('offered', 'class_id', 'released_at', 'classes_released_through') }}
