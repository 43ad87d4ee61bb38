"""Two runs of the same day at once, as two `dagster job execute` processes on one instance (what
two people clicking "Materialize", or a sensor and a schedule, would start outside the queue).

Whatever the race gives (both succeed, or one loses DuckDB's file lock or a Delta commit), every
committed row exists exactly once; a run that lost is diagnosed as transient by the failure
sensor and its retry succeeds. Afterwards the lakehouse holds exactly the rows one undisturbed
daily run of the day commits (`daily_day1`, tests/conftest.py, on the same landing zone), row
for row: nothing lost, nothing twice.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from tests.pipeline_runs import DAY1, assert_same, lake_settings, record_rows, snapshot

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAY = DAY1.isoformat()
GOLD = ("user_features_daily", "class_features_daily", "training_examples", "scoring_candidates")


def _copies(settings: LakehouseSettings) -> dict[str, tuple[int, int]]:
    """table -> (rows, distinct rows) for bronze workouts and the gold tables."""
    out = {}
    for layer, name in [("bronze", "workouts"), *[("gold", g) for g in GOLD]]:
        df = delta.read(settings.table_uri(layer, name))
        df = df.drop([c for c in df.columns if c.startswith("_")])  # ingestion bookkeeping
        out[f"{layer}/{name}"] = (df.height, df.unique().height)
    return out


@pytest.mark.drill_only
@pytest.mark.fault("two runs of the same day at once")
def test_two_runs_of_one_day_at_once_leave_one_copy(landed, daily_day1, tmp_path, monkeypatch, fault_drill):
    data = tmp_path / "data"
    shutil.copytree(landed, data)  # the landing zone of days 1-4 (tiny, seed 11)
    home = data / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(data), "DAGSTER_HOME": str(home)}
    for k in ("LAKEHOUSE_URI", "LANDING_URI", "LAKEHOUSE_DUCKDB_PATH"):
        env.pop(k, None)
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings = LakehouseSettings.from_env()
    assert (settings.uri, settings.landing_uri) == (lake_settings(data).uri, lake_settings(data).landing_uri)
    expected = snapshot(lake_settings(daily_day1))  # one undisturbed daily run of the same day

    with dg.DagsterInstance.get():  # create the instance's storage once, before the race
        pass
    cmd = [sys.executable, "-m", "dagster", "job", "execute", "-m", "orchestration.definitions",
           "-j", "daily_lakehouse_job", "--tags", json.dumps({"dagster/partition": DAY})]
    fault_drill.injected()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]

    from operations.policy import RemediationPolicy
    from orchestration.definitions import build_definitions
    from orchestration.remediation import build_remediation_sensor, remediation_log

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records(dg.RunsFilter(job_name="daily_lakehouse_job"))
        statuses = sorted(r.dagster_run.status.value for r in runs)
        assert len(runs) == 2, (codes, [o[-2000:] for o in outputs])
        # the committed rows are one copy, whoever won
        copies = _copies(settings)
        assert all(rows == distinct and rows > 0 for rows, distinct in copies.values()), copies
        fault_drill.detail.update({"statuses": statuses})

        failed = [r.dagster_run for r in runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
        if failed:
            # the loser is diagnosed as transient and retried; the retry succeeds
            defs = build_definitions(settings)
            sensor = build_remediation_sensor(policy=RemediationPolicy(backoff_s=0.0))
            ctx = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                          resources={"lakehouse": defs.resources["lakehouse"]})
            result = sensor(ctx)
            decisions = remediation_log(settings).decisions()
            fault_drill.detail["diagnosis"] = decisions["category"].to_list()
            assert decisions["category"].to_list() == ["transient_storage_or_network"], \
                decisions.select("category", "rule", "evidence").to_dicts()
            for req in result.run_requests:
                t0 = time.perf_counter()
                rerun = defs.resolve_job_def(req.job_name).execute_in_process(
                    instance=instance, run_config=req.run_config, tags=req.tags,
                    partition_key=req.partition_key, asset_selection=req.asset_selection,
                    raise_on_error=False)
                assert rerun.success
                fault_drill.detail["retry_s"] = round(time.perf_counter() - t0, 1)
        fault_drill.recovered()
        after = _copies(settings)
        assert after == copies or all(r == d for r, d in after.values())
        got = snapshot(settings)
        record_rows(fault_drill, got, expected)  # rows lost: expected keys missing from `got`
        assert_same(got, expected)
        # the bronze day holds exactly the landing zone's valid workouts
        landed = pl.read_parquet(f"{settings.landing_uri}/workouts/date={DAY}/*.parquet")
        quarantined = delta.row_count(settings.table_uri("bronze", "quarantine"),
                                      where=pl.col("entity") == "workouts") if delta.table_exists(
            settings.table_uri("bronze", "quarantine")) else 0
        assert after["bronze/workouts"][0] + quarantined == landed.height
