{#-
  Generic data test: no two rows share the same values of `combination_of_columns`
  (the grain of a table). Usage in YAML, on the model:

    data_tests:
      - unique_combination_of_columns:
          arguments:
            combination_of_columns: [user_id, feature_date]
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
select {{ combination_of_columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}
