"""What the quality suites check, as data (edit here): the row-volume band, the positive-ratio
tolerance, how many examples a failure carries, which gold marts get which GX-only checks, and
which checks block.

Gold suites hold only what dbt's tests of the marts cannot say: the row volume against the
previous partition and the share of positives (see GOLD_TABLES; every other gold rule is a dbt
test). The columns they name live in the small dicts below: a rename is a one-line change.
"""

from __future__ import annotations

from typing import Any


# Rows of this partition / rows of the previous partition must fall inside this band.
VOLUME_BAND: tuple[float, float] = (0.5, 2.0)
# Share of positives may deviate this much (relative) from 1 / (negatives_per_positive + 1).
POSITIVE_RATIO_TOLERANCE = 0.2
# How many example values / rows a failed check carries in its metadata.
N_EXAMPLES = 5
# Reference sets up to this size are checked by GX's ExpectColumnValuesToBeInSet inside the
# suite's single validation. Larger ones are checked with Arrow's ``is_in``: GX
# re-serialises an expectation's value_set dozens of times per validation (about 6 s for a
# 40,000-id set, measured with GX 1.24.1), while ``is_in`` over 1M rows takes ~0.1 s. The
# outcome has the same form either way; its metadata says which engine ran ("engine").
GX_VALUE_SET_LIMIT = 1000

# Gold feature marts: only what dbt cannot declare. Every rule on ONE table's rows (unique keys,
# not null, accepted values, ranges, relationships) is a dbt data test of the mart
# (dbt_project/models/marts/_marts.yml, models/mapped/_mapped.yml): `dbt build` runs them before
# anything is published and fails on a broken one, so they are the gold gate too. What needs more
# than the rows dbt tests stays here, run on the rows staged for the Delta commit: the row volume
# against the previous partition of the committed table, and the share of positives against
# negatives_per_positive. tests/dbt/test_gold_rules.py fails when a suite below declares a rule
# a dbt test declares (GX_ONLY_CHECKS). Keys are check kinds; ``blocking`` lists the blocking
# ones (a failing blocking check stops the commit and everything downstream). A mart without an
# entry (scoring_candidates, user_instructor_affinity) has its dbt tests and no_shrink only.
GX_ONLY_CHECKS = ("row_volume_vs_previous", "positive_ratio")
GOLD_TABLES: dict[str, dict[str, Any]] = {
    "user_features_daily": {"row_volume_vs_previous": VOLUME_BAND},
    "class_features_daily": {"row_volume_vs_previous": VOLUME_BAND},
    "training_examples": {
        "positive_ratio": "label_take",
        "row_volume_vs_previous": VOLUME_BAND,
        "blocking": ("positive_ratio",),
    },
}

# The same marts built from a mapping file (dbt_project/models/mapped).
MAPPED_GOLD_TABLES: dict[str, dict[str, Any]] = {
    "user_features_daily": {"row_volume_vs_previous": VOLUME_BAND},
    "class_features_daily": {"row_volume_vs_previous": VOLUME_BAND},
    "training_examples": {
        "positive_ratio": "label_take",
        "row_volume_vs_previous": VOLUME_BAND,
        # a small catalogue gives some positives fewer than K negatives: the ratio only warns
        "blocking": (),
    },
}

# Bronze: which checks block (the rest warn). Accepted values and ranges are enforced at
# ingest (quarantine) already, so here they only warn.
BRONZE_BLOCKING = ("unique_key", "not_null", "referential_integrity")
