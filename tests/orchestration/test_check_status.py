"""What the Dagster UI shows of the checks after a backfill (one range run) and a daily run, read
through the webserver's GraphQL on the real instance: every check that ran shows its result,
none shows "Skipped"."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

HERE = Path(__file__).resolve().parent

# The asset's checks with the status the asset graph and the Checks tab show, and each
# check's executions (newest first) with their windows.
CHECKS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetChecksOrError { ... on AssetChecks { checks { name
    executionForLatestMaterialization { status partition }
    partitionStatuses { ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } }
  } } } } } }"""
EXECUTIONS = """query($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 20) { status partition
    evaluation { metadataEntries { label ... on TextMetadataEntry { text } } } } }"""


def check_statuses(ctx, key: dg.AssetKey) -> dict[str, tuple[str | None, list]]:
    """check name -> (status of its latest execution as the asset graph shows it, the
    (first day, last day, status) ranges of its partition bar)."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    res = execute_dagster_graphql(ctx, CHECKS, {"key": {"path": key.path}})
    assert not res.errors, res.errors
    checks = res.data["assetNodeOrError"]["assetChecksOrError"]["checks"]
    return {c["name"]: ((c["executionForLatestMaterialization"] or {}).get("status"),
                        [(r["startKey"], r["endKey"], r["status"]) for r in c["partitionStatuses"]["ranges"]])
            for c in checks}


def executions(ctx, key: dg.AssetKey, name: str) -> list[tuple[str, str, str]]:
    """(day, status, the audited window) of each execution of a check, newest first."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    res = execute_dagster_graphql(ctx, EXECUTIONS, {"key": {"path": key.path}, "name": name})
    assert not res.errors, res.errors
    return [(e["partition"], e["status"], next((m["text"] for m in (e["evaluation"] or {}).get("metadataEntries", [])
                                if m["label"] == "window"), "")) for e in res.data["assetCheckExecutions"]]


def assert_all_passed(ctx, keys, first: str, last: str) -> None:
    """Every check of every asset: Passed, on every day from `first` to `last` and nothing else."""
    for key in keys:
        statuses = check_statuses(ctx, key)
        assert len(statuses) >= 3, f"{key.to_user_string()} has checks {sorted(statuses)}"
        for name, (status, days) in statuses.items():
            label = f"{key.to_user_string()}:{name}"
            assert status == "SUCCEEDED", f"{label} shows {status}"
            assert days == [(first, last, "SUCCEEDED")], f"{label}: days {days}"


def test_checks_show_passed_after_a_backfill_and_a_daily_run(tmp_path):
    from dagster_graphql.test.utils import define_out_of_process_context

    from tests.orchestration import check_status_defs as m

    job = m.defs.resolve_job_def("publish_job")
    key = m.KEYS["training_examples"]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        backfill = job.execute_in_process(instance=instance, tags={
            "dagster/asset_partition_range_start": "2026-09-01", "dagster/asset_partition_range_end": "2026-09-04"})
        # one step for the range, and the blocking checks let the downstream asset run
        assert backfill.success and {e.step_key for e in backfill.all_events
                                     if e.event_type_value == "STEP_SUCCESS"} == {"publish_gold", "downstream"}
        with define_out_of_process_context(str(HERE / "check_status_defs.py"), "defs", instance) as ctx:
            assert_all_passed(ctx, m.KEYS.values(), "2026-09-01", "2026-09-04")
            daily = job.execute_in_process(instance=instance, partition_key="2026-09-05")
            assert daily.success
            assert_all_passed(ctx, m.KEYS.values(), "2026-09-01", "2026-09-05")
            # each day's own execution, none Skipped; the audit's window alongside
            backfilled = [(f"2026-09-0{d}", "SUCCEEDED", "2026-09-01..2026-09-04") for d in (4, 3, 2, 1)]
            assert executions(ctx, key, "not_null") == [("2026-09-05", "SUCCEEDED", "2026-09-05..2026-09-05"),
                                                        *backfilled]


@pytest.mark.slow
@pytest.mark.extra
def test_the_pipeline_checks_show_passed_after_a_backfill_and_a_daily_run(landed, tmp_path, monkeypatch):
    """The real code location: bronze and gold checks after a two-day backfill and a daily run."""
    from dagster_graphql.test.utils import define_out_of_process_context

    from tests.pipeline_runs import AMBIENT, DAY1, DAY2, DAY3, GOLD, BRONZE_KEYS, assert_ok, copy_lake, run_job

    s = copy_lake(landed, tmp_path / "data")
    for k in AMBIENT:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", s.data_dir)
    keys = [dg.AssetKey(["gold", t]) for t in GOLD] + [dg.AssetKey(["bronze", e]) for e in BRONZE_KEYS]
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        assert_ok(run_job(s, days=(DAY1, DAY2), instance=instance))
        assert_ok(run_job(s, day=DAY3, instance=instance))
        root = HERE.parents[1]
        with define_out_of_process_context(str(root / "orchestration" / "definitions.py"), "defs", instance) as ctx:
            for key in keys:
                for name, (status, days) in check_statuses(ctx, key).items():
                    label = f"{key.to_user_string()}:{name}"
                    assert status in ("SUCCEEDED", "FAILED"), f"{label} shows {status}"
                    # a warning may fail on a tiny day; nothing is Skipped that ran
                    assert days and days[0][0] == DAY1.isoformat() and days[-1][1] == DAY3.isoformat(), (label, days)
                    assert all(st in ("SUCCEEDED", "FAILED") for _, _, st in days), (label, days)
