{#-
  Item availability per platform and the scoring candidates, for both datasets.

  availability_ranks(offered, item_column, available_from, through_column): the rows of
  `offered` (platform, item, available_from: available strictly after it) with
  availability_rank, the item's 1-based position among the platform's items in order of
  availability (ties by item), and `through_column`, how many items the platform had once this
  one was available (equal for items available at the same instant): "the n items available
  before time t" is then a single ASOF lookup (training_examples' negatives).

  scoring_candidates(dates, availability, item_column, available_date): gold
  scoring_candidates, one row per (feature_date, platform, class_id) of the items available on
  the platform by the end of feature_date, to score for serve_date = feature_date + 1.
-#}

{% macro availability_ranks(offered, item_column, available_from, through_column) -%}
select
    *,
    cast(max(availability_rank) over (partition by platform, {{ available_from }}) as integer) as {{ through_column }}
from (
    select
        *,
        cast(row_number() over (
            partition by platform order by {{ available_from }}, {{ item_column }}
        ) as integer) as availability_rank
    from {{ offered }}
) as ranked
{%- endmacro %}


{% macro scoring_candidates(dates, availability, item_column, available_date) -%}
select
    d.feature_date,
    cast(d.feature_date + 1 as date) as serve_date,
    a.platform,
    a.{{ item_column }} as class_id
from {{ dates }} as d
inner join {{ availability }} as a on a.{{ available_date }} <= d.feature_date
{%- endmacro %}
