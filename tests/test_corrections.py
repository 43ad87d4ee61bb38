"""A late correction flows downstream: re-landing an older day with different rows, after later
days were built, recomputes every later day through Dagster (the correction sensor's range run)
until gold equals a from-scratch rebuild on the corrected landing, row for row."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from lakehouse.contract import ENTITIES
from tests.pipeline_runs import (
    DAY1,
    DAY3,
    assert_ok,
    assert_same,
    copy_lake,
    correct_day,
    run_job,
    snapshot,
)

pytestmark = pytest.mark.slow


def gold_only(snap: dict) -> dict:
    return {t: df for t, df in snap.items() if t.startswith("gold/")}


def test_a_corrected_older_day_recomputes_later_days_until_gold_equals_a_rebuild(landed, reference, tmp_path):
    from orchestration.sensors import correction_sensor

    s = copy_lake(reference[0], tmp_path / "live")  # days 1-3 built (a backfill of 1-2, then day 3)
    instance = dg.DagsterInstance.ephemeral()
    before, after = correct_day(s, DAY1)
    assert after < before

    # the re-run of day 1, as the landing sensor would start it: bronze says the day was corrected
    rerun = run_job(s, day=DAY1, instance=instance)
    assert_ok(rerun)
    mats = {m.asset_key.to_user_string(): m.materialization.metadata for m in rerun.get_asset_materialization_events()}
    assert mats["bronze/workouts"]["corrected_days"].value == [DAY1.isoformat()]
    assert mats["bronze/workouts"]["rows_replaced"].value == before
    stale = snapshot(s)

    # from scratch on the corrected landing: what gold must converge to
    rebuilt = copy_lake(landed, tmp_path / "rebuilt")
    correct_day(rebuilt, DAY1)
    assert_ok(run_job(rebuilt, days=(DAY1, DAY3)))
    want = gold_only(snapshot(rebuilt))
    # later days were stale: their running totals still count the removed workouts
    stale_later = {t: df.filter(pl.col("feature_date") > DAY1) for t, df in gold_only(stale).items()
                   if "feature_date" in df.columns}
    want_later = {t: df.filter(pl.col("feature_date") > DAY1) for t, df in want.items() if t in stale_later}
    with pytest.raises(AssertionError):
        assert_same(stale_later, want_later)

    # the correction sensor asks for one range run of everything from day 1 to the newest built day
    from assets.resources import LakehouseResource

    lakehouse = {"lakehouse": LakehouseResource(uri=s.uri, data_dir=s.data_dir)}
    ctx = dg.build_sensor_context(instance=instance, resources=lakehouse)
    request = correction_sensor(ctx)
    assert isinstance(request, dg.RunRequest), request
    assert (request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"]) == (DAY1.isoformat(), DAY3.isoformat())
    recompute = run_job(s, tags=request.tags, instance=instance, job="recompute_features_job")
    assert_ok(recompute)
    assert_same(gold_only(snapshot(s)), want)

    # converged: nothing more to do, and a re-run with the same rows corrects nothing
    again = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, resources=lakehouse)
    assert isinstance(correction_sensor(again), dg.SkipReason)
    same = run_job(s, day=DAY1, instance=instance)
    assert_ok(same)
    meta = {m.asset_key.to_user_string(): m.materialization.metadata for m in same.get_asset_materialization_events()}
    assert all(meta[f"bronze/{e.name}"]["corrected_days"].value == [] for e in ENTITIES)
    cursor = dg.build_sensor_context(instance=instance, cursor=again.cursor, resources=lakehouse)
    assert isinstance(correction_sensor(cursor), dg.SkipReason)
    assert json.loads(json.dumps(request.tags))["lakehouse/trigger"] == "correction"
