-- Where each class is offered: bike -> equipment bike or none, tread -> tread or none,
-- app -> every class. availability_rank numbers a platform's classes in release order;
-- classes_released_through is how many classes that platform had once this one was out
-- (equal for classes released at the same instant), which makes "the n classes available
-- before time t" a single ASOF lookup.
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
),

ranked as (
    select
        *,
        cast(row_number() over (partition by platform order by released_at, class_id) as integer) as availability_rank
    from offered
)

select
    *,
    cast(max(availability_rank) over (partition by platform, released_at) as integer) as classes_released_through
from ranked
