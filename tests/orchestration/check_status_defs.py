"""A code location for tests/orchestration/test_check_status.py: a partitioned multi-asset that
commits two tables and reports their checks as the gold and bronze steps do (the specs of
`assets.checks.check_specs`, the results of `check_evaluations`), with one-step range runs."""

import dagster as dg

from assets.checks import check_evaluations, check_specs, window_of
from lakehouse.quality.checks import CheckOutcome, NotNull, RowVolume, SuiteSpec
from lakehouse.quality.gates import REPLACE_AUDITS, TableSuite

DAYS = dg.DailyPartitionsDefinition(start_date="2026-09-01", end_date="2026-09-08", timezone="UTC")
TABLES = ("user_features_daily", "training_examples")
KEYS = {t: dg.AssetKey(["gold", t]) for t in TABLES}
SUITES = {KEYS[t]: TableSuite(spec=SuiteSpec(table=t, checks=(NotNull(("user_id",)), RowVolume())),
                              layer="gold", table=t, partition_col="feature_date") for t in TABLES}


def outcomes(table: str) -> list[CheckOutcome]:
    names = [c.name for c in SUITES[KEYS[table]].spec.checks] + [n for n, _ in REPLACE_AUDITS]
    return [CheckOutcome(name=n, passed=True, severity="ERROR", description=f"{table}: {n} passed",
                         table=table, blocking=n != "row_volume_vs_previous") for n in names]


@dg.multi_asset(name="publish_gold", specs=[dg.AssetSpec(k) for k in KEYS.values()],
                check_specs=check_specs(SUITES, REPLACE_AUDITS, DAYS), partitions_def=DAYS,
                backfill_policy=dg.BackfillPolicy.single_run(), can_subset=True)
def publish_gold(context: dg.AssetExecutionContext):
    start, end = window_of(context)
    for table, key in KEYS.items():
        yield dg.MaterializeResult(asset_key=key)
        yield from check_evaluations(context, key, outcomes(table), f"{start}..{end}")


@dg.asset(deps=[KEYS["training_examples"]], partitions_def=DAYS,
          backfill_policy=dg.BackfillPolicy.single_run())
def downstream() -> None:
    """Waits for the blocking checks of its input, as the serving assets do."""


defs = dg.Definitions(assets=[publish_gold, downstream],
                      jobs=[dg.define_asset_job("publish_job", selection=dg.AssetSelection.all())])
