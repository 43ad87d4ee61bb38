{#-
  The deterministic negative draws shared by the fitness and the mapped training_examples.

  `pools` is a CTE with one row per positive: `id_column` (its key), n_candidates (available
  items minus the positive) and draw_md5 (md5 of the key). Emits the CTEs `draws` (one row per
  positive and sample_index 1..min(K, n_candidates)) and `sampled`, which adds candidate_offset
  in 0..n_candidates-1, distinct across sample_index: the ring of candidates is rotated by a
  hash of the key and cut into K equal strata, and negative k takes a hashed position in
  stratum k. `exclude`: columns of `pools` not carried into `draws`.
-#}
{% macro ring_draws(pools, id_column, k_neg, exclude=none) -%}
draws as (
    select
        p.*{% if exclude %} exclude ({{ exclude }}){% endif %},
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
