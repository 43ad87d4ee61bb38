{#-
  Generic data test: every row satisfies a SQL boolean `expression`. On a model:

    data_tests:
      - expression_is_true:
          arguments:
            expression: "workouts_7d <= workouts_28d"

  On a column the expression continues the column name (e.g. expression: ">= 0").
  NULL counts as a failure.
-#}
{% test expression_is_true(model, expression, column_name=none) %}
select *
from {{ model }}
where not coalesce(({{ column_name ~ ' ' if column_name else '' }}{{ expression }}), false)
{% endtest %}
