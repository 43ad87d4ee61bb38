{#-
  The positive interactions both datasets train on (fitness workouts, mapped takes): the context
  of their moment and their same-day follow-up labels.

  moment_context(at): hour_of_day (0-23), day_of_week (ISO: 1 = Monday .. 7 = Sunday) and
  is_weekend of the naive UTC timestamp `at`.

  last_per_day(events, item_column, at_column, kinds, kind_column): a SELECT: per user_id, item
  and event_date of `events`, the time of the last event of each kind, `last_<kind>_at`. With
  kind_column the kinds are its values (other events are left out); without it `events` holds
  one kind.

  followed_same_day(followups, kind, at): the label rule: the user had a `kind` event on the same
  item the same day at or after `at` (so a day's labels are final once the day has landed);
  `followups` is the alias of last_per_day's rows joined on user, item and event_date.
-#}

{% macro moment_context(at) -%}
    cast(extract(hour from {{ at }}) as integer) as hour_of_day,
    cast(isodow({{ at }}) as integer) as day_of_week,
    isodow({{ at }}) in (6, 7) as is_weekend
{%- endmacro %}


{% macro last_per_day(events, item_column, at_column, kinds, kind_column=none) -%}
    select
        user_id,
        {{ item_column }},
        event_date,
        {%- for kind in kinds %}
        max(
            {%- if kind_column %}case when {{ kind_column }} = '{{ kind }}' then {{ at_column }} end
            {%- else %}{{ at_column }}{% endif -%}
        ) as last_{{ kind }}_at{{ "," if not loop.last }}
        {%- endfor %}
    from {{ events }}
    {%- if kind_column %}
    where {{ kind_column }} in ({% for kind in kinds %}'{{ kind }}'{{ ", " if not loop.last }}{% endfor %})
    {%- endif %}
    group by user_id, {{ item_column }}, event_date
{%- endmacro %}


{% macro followed_same_day(followups, kind, at) -%}
    coalesce({{ followups }}.last_{{ kind }}_at >= {{ at }}, false)
{%- endmacro %}
