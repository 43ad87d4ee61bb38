"""Quality gates: declarative suites of named checks, validated with Great Expectations 1.x.

Plain Python (no Dagster imports). The Dagster side turns every check of a suite into an asset
check of the same name and every :class:`~lakehouse.quality.checks.CheckOutcome` into its result::

    spec = bronze_suite("workouts")  # lakehouse.quality.suites
    outcomes = run_suite(spec, df, reference={"users": user_ids, "classes": class_ids},
                         previous_row_count=rows_of_previous_partition)  # lakehouse.quality.engine

- ``config``: what the suites check, as data (edit here): bands, tolerances, the gold marts' checks;
- ``checks``: the check kinds, a suite, a check's outcome, and what callers do with outcomes;
- ``suites``: the bronze suites (from the landing contract, and the mapped import's) and gold ones;
- ``engine``: running a suite in one Great Expectations validation;
- ``failures``: a check's outcome from its validated pieces, and the text that says what failed;
- ``gates``: the audits of rows staged for a commit (write-audit-publish) and of a committed window.
"""
