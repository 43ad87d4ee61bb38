{#-
  Training examples with deterministic negative sampling, for both datasets' training_examples.

  training_examples(positives, availability, k_neg): the SELECT of a run's examples.
  `positives` (SQL): one row per positive interaction in the run: interaction_id, user_id,
  item_id, platform, event_at, event_date, is_completed, has_music_like, then its context
  columns (every other column, in order). `availability`: a table of macros/features/
  availability.sql's availability_ranks() (platform, `item`, `available_from`: available
  strictly after it, availability_rank, `available_through`).

  Each positive gives example sample_index 0 (label_take 1, label_complete / label_music_like
  from is_completed / has_music_like) and min(k_neg, m) negatives (every label 0), m being the
  items available on its platform strictly before it, the positive itself excluded. The draw:
  candidates numbered 0..m-1 in availability order, the ring rotated by an MD5 hash of the
  interaction_id and cut into k_neg equal strata, negative k taking a hashed position in
  stratum k (ring_draws): without replacement, the same on every run and machine
  (macros/stable_hash.sql). Every example carries the positive's context.
  Columns (gold training_examples): example_id (`<interaction_id>:<sample_index>`), workout_id
  (the interaction), sample_index, event_date, feature_date (event_date - 1: the features to
  join, point in time), user_id, class_id (the item), platform, the context, label_take,
  label_complete, label_music_like, is_negative.
-#}
{% macro training_examples(positives, availability, item, available_from, available_through, k_neg) -%}
with positives as (
    {{ positives }}
),

availability as (
    select
        platform,
        {{ item }} as item_id,
        {{ available_from }} as available_from,
        availability_rank,
        {{ available_through }} as available_through
    from {{ availability }}
),

sized as (
    select
        p.interaction_id,
        p.platform,
        coalesce(pool.available_through, 0) as n_available,
        pos.availability_rank as positive_rank,
        coalesce(pos.availability_rank <= pool.available_through, false) as positive_in_pool,
        md5(p.interaction_id) as draw_md5
    from positives as p
    -- n_available: items available on this platform strictly before the interaction
    asof left join availability as pool
        on p.platform = pool.platform and p.event_at > pool.available_from
    left join availability as pos
        on p.platform = pos.platform and p.item_id = pos.item_id
),

pools as (
    select
        *,
        n_available - case when positive_in_pool then 1 else 0 end as n_candidates
    from sized
),

{{ ring_draws('pools', 'interaction_id', k_neg) }},

negatives as (
    select
        s.interaction_id,
        s.sample_index,
        a.item_id
    from sampled as s
    inner join availability as a
        on a.platform = s.platform
        -- skip the positive's own rank to map a candidate offset onto an availability rank
        and a.availability_rank = s.candidate_offset + 1
            + case when s.positive_in_pool and s.candidate_offset + 1 >= s.positive_rank then 1 else 0 end
),

examples as (
    select
        interaction_id,
        0 as sample_index,
        item_id,
        1 as label_take,
        case when is_completed then 1 else 0 end as label_complete,
        case when has_music_like then 1 else 0 end as label_music_like
    from positives

    union all

    select interaction_id, sample_index, item_id, 0, 0, 0
    from negatives
)

select
    e.interaction_id || ':' || cast(e.sample_index as varchar) as example_id,
    e.interaction_id as workout_id,
    cast(e.sample_index as integer) as sample_index,
    p.event_date,
    cast(p.event_date - 1 as date) as feature_date,
    p.user_id,
    e.item_id as class_id,
    p.platform,
    -- the context of the moment: the rest of the positive
    p.* exclude (
        interaction_id, user_id, item_id, platform, event_at, event_date, is_completed, has_music_like
    ),
    -- labels
    cast(e.label_take as integer) as label_take,
    cast(e.label_complete as integer) as label_complete,
    cast(e.label_music_like as integer) as label_music_like,
    e.sample_index > 0 as is_negative
from examples as e
inner join positives as p on e.interaction_id = p.interaction_id
{%- endmacro %}


{#-
  ring_draws(pools, id_column, k_neg): `pools` is a CTE with one row per positive: `id_column`
  (its key), n_candidates (available items minus the positive) and draw_md5 (md5 of the key).
  Emits the CTEs `draws` (one row per positive and sample_index 1..min(K, n_candidates)) and
  `sampled`, which adds candidate_offset in 0..n_candidates-1, distinct across sample_index:
  the ring of candidates is rotated by a hash of the key and cut into K equal strata, and
  negative k takes a hashed position in stratum k.
-#}
{% macro ring_draws(pools, id_column, k_neg) -%}
draws as (
    select
        p.*,
        k.sample_index,
        greatest(p.n_candidates // {{ k_neg }}, 1) as stratum_size,
        {{ hex_slice_int('p.draw_md5', 0) }} as rotation_hash,
        case
            when k.sample_index <= 4 then {{ hex_slice_int('p.draw_md5', 'k.sample_index') }}
            else {{ stable_hash("p." ~ id_column ~ " || '#' || cast(k.sample_index as varchar)") }}
        end as draw_hash
    from {{ pools }} as p
    cross join (
        select cast(unnest(generate_series(1, {{ k_neg }})) as integer) as sample_index
    ) as k
    where k.sample_index <= p.n_candidates
),

sampled as (
    select
        *,
        (rotation_hash % n_candidates
            + (sample_index - 1) * stratum_size
            + draw_hash % stratum_size) % n_candidates as candidate_offset
    from draws
)
{%- endmacro %}
