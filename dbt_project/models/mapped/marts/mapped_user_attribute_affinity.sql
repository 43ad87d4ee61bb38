-- depends_on: {{ ref('stg_mapped__items') }}, {{ ref('int_mapped_takes_labeled') }}, {{ ref('int_mapped_feature_dates_spined') }}
{{
    config(
        meta={
            'range_column': 'feature_date',
            'publish': {'layer': 'gold', 'name': 'user_attribute_affinity', 'partition_by': 'feature_date'},
        },
    )
}}
-- The mapped dataset's user x attribute affinity (gold user_attribute_affinity): one row per
-- (feature_date, user_id, attribute, value) for every value of every categorical item attribute
-- (the text item_attr_* columns of the items table; each value of a multi-valued one) that the
-- user's takes in the var('mapped_affinity_days') days up to the END of feature_date carried:
-- how many takes, and their share of all the user's takes in that window. The fitness
-- user_instructor_affinity for any attribute: training and scoring for day D look up
-- feature_date = D - 1 and the candidate item's value(s) (`ml.features.ATTR_AFFINITY_PREFIX`;
-- several values: their mean share). No categorical attribute: no rows.
{%- set window_days = var('mapped_affinity_days') | int %}
{%- set attributes = [] %}
{%- if execute %}
    {#- the columns as the import typed them: categorical = text, numeric = double #}
    {%- for column in adapter.get_columns_in_relation(ref('stg_mapped__items')) %}
        {%- if column.name.startswith('item_attr_') and column.is_string() %}
            {%- do attributes.append(column.name) %}
        {%- endif %}
    {%- endfor %}
{%- endif %}

{%- if attributes %}
with dates as (
    select feature_date from {{ ref('int_mapped_feature_dates_spined') }}
),

takes as (
    select user_id, item_id, event_date
    from {{ ref('int_mapped_takes_labeled') }}
    where event_date >= (select min(feature_date) from dates) - {{ window_days - 1 }}
      and event_date <= (select max(feature_date) from dates)
),

item_values as (
    -- a multi-valued attribute (the mapping's multi_valued) holds its values joined by chr(31):
    -- one row per value; a single value splits into itself
    {%- for attribute in attributes %}
    select distinct item_id, '{{ attribute }}' as attribute,
        unnest(string_split({{ attribute }}, chr(31))) as value
    from {{ ref('stg_mapped__items') }}
    where {{ attribute }} is not null
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

user_days as (
    select user_id, event_date, count(*) as takes
    from takes
    group by user_id, event_date
),

value_days as (
    select t.user_id, v.attribute, v.value, t.event_date, count(*) as takes
    from takes as t
    inner join item_values as v on t.item_id = v.item_id
    group by t.user_id, v.attribute, v.value, t.event_date
),

user_windows as (
    select d.feature_date, u.user_id, sum(u.takes) as takes
    from dates as d
    inner join user_days as u
        on u.event_date <= d.feature_date
        and u.event_date > d.feature_date - {{ window_days }}
    group by d.feature_date, u.user_id
),

value_windows as (
    select d.feature_date, v.user_id, v.attribute, v.value, sum(v.takes) as takes
    from dates as d
    inner join value_days as v
        on v.event_date <= d.feature_date
        and v.event_date > d.feature_date - {{ window_days }}
    group by d.feature_date, v.user_id, v.attribute, v.value
)

select
    v.feature_date,
    v.user_id,
    v.attribute,
    v.value,
    cast(v.takes as integer) as takes,
    -- of all the user's takes in the window, items without this attribute included
    cast(v.takes as double) / u.takes as share
from value_windows as v
inner join user_windows as u
    on v.feature_date = u.feature_date and v.user_id = u.user_id
{%- else %}
-- the items carry no categorical attribute: the table exists, empty, with its columns
select
    cast(null as date) as feature_date,
    cast(null as varchar) as user_id,
    cast(null as varchar) as attribute,
    cast(null as varchar) as value,
    cast(null as integer) as takes,
    cast(null as double) as share
where false
{%- endif %}
