"""A long backfill split into runs of LAKEHOUSE_BACKFILL_DAYS_PER_RUN days: the same policy on
every step that takes a range, the demo's history run the same way, a bad value refused."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from lakehouse.io.settings import backfill_days_per_run


def test_the_setting_is_a_whole_number_of_days_or_unset():
    assert backfill_days_per_run({}) is None
    assert backfill_days_per_run({"LAKEHOUSE_BACKFILL_DAYS_PER_RUN": " "}) is None
    assert backfill_days_per_run({"LAKEHOUSE_BACKFILL_DAYS_PER_RUN": "3"}) == 3
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ValueError, match=rf"LAKEHOUSE_BACKFILL_DAYS_PER_RUN='{bad}': expected a whole number"):
            backfill_days_per_run({"LAKEHOUSE_BACKFILL_DAYS_PER_RUN": bad})


@pytest.mark.parametrize("per_run", [None, 3])
def test_every_range_step_takes_the_same_policy(tmp_path, monkeypatch, per_run):
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LAKEHOUSE_URI", raising=False)
    if per_run is None:
        monkeypatch.delenv("LAKEHOUSE_BACKFILL_DAYS_PER_RUN", raising=False)
    else:
        monkeypatch.setenv("LAKEHOUSE_BACKFILL_DAYS_PER_RUN", str(per_run))
    from orchestration.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    policies = {graph.get(dg.AssetKey(k)).backfill_policy
                for k in (["bronze", "workouts"], ["staging", "stg_app__workouts"], ["gold", "training_examples"])}
    assert policies == {dg.BackfillPolicy.single_run() if per_run is None
                        else dg.BackfillPolicy.multi_run(per_run)}


def test_the_demo_backfills_in_runs_of_that_many_days_oldest_first(monkeypatch):
    from orchestration import demo

    calls = []
    monkeypatch.setattr(demo, "execute", lambda tags, *a, **k: calls.append(tags) or (1 if len(calls) == 3 else 0))
    monkeypatch.setenv("LAKEHOUSE_BACKFILL_DAYS_PER_RUN", "3")
    start = dt.date(2026, 9, 1)
    assert demo.run_range(start, start + dt.timedelta(days=6)) == 1  # 7 days: 3 + 3 + 1, the third fails
    assert [(c["dagster/asset_partition_range_start"], c["dagster/asset_partition_range_end"]) for c in calls] == [
        ("2026-09-01", "2026-09-03"), ("2026-09-04", "2026-09-06"), ("2026-09-07", "2026-09-07")]
    calls.clear()
    monkeypatch.delenv("LAKEHOUSE_BACKFILL_DAYS_PER_RUN")
    assert demo.run_range(start, start + dt.timedelta(days=6)) == 0
    assert [(c["dagster/asset_partition_range_start"], c["dagster/asset_partition_range_end"]) for c in calls] == [
        ("2026-09-01", "2026-09-07")]
