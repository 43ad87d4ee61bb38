"""Landing faults through the whole daily chain, with a champion and a served cache: re-runs of a
committed day whose export lost an entity, renamed or retyped a column, or whose manifest lies;
a late correction of an older day; a float in an integer column on a new day.

Each case records, for `make fault-drill`'s second table: the run's outcome, whether its message
names the file, the column and the row, committed rows lost (must be 0), whether gold equals a
from-scratch rebuild on the landing as it should be, whether the cache still serves, and the time
until the pipeline is green again. They run whole Dagster runs (with inference), so `make test`
leaves them to the drill; tests/lakehouse/test_ingest.py and tests/test_corrections.py prove each
rule on its own.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse.io import delta
from tests.landing_factory import seal
from tests.pipeline_runs import (
    DAY1,
    DAY2,
    DAY3,
    assert_ok,
    assert_same,
    committed_before,
    copy_lake,
    errors,
    landing_file,
    record_rows,
    run_job,
    snapshot,
    train_run_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.drill_only]
DAY4 = DAY3 + dt.timedelta(days=1)
TRAIN = {"train_days": 2, "valid_days": 1, "epochs": 1, "batch_size": 256, "embedding_dim": 8,
         "bottom_mlp": [16, 8], "top_mlp": [32]}
NO_RAY = {"ops": {"serving__recommendations": {"config": {"use_ray": False}}}}
DAILY = "daily_recommendations_job"


@pytest.fixture(scope="module")
def served(reference, tmp_path_factory):
    """Days 1-3 built, a champion trained on days 1-2 (held out: 3), day 3 scored and its cache
    published: what the app reads while the faults below happen."""
    data = tmp_path_factory.mktemp("served") / "data"
    s = copy_lake(reference[0], data)
    instance = dg.DagsterInstance.ephemeral()
    assert_ok(run_job(s, job="train_model_job", instance=instance, tags={},
                      run_config=train_run_config(TRAIN)))
    assert_ok(run_job(s, day=DAY3, job="rescore_job", instance=instance, run_config=NO_RAY))
    return data


def cache_state(settings) -> tuple[str | None, bytes | None]:
    """(served version, a known user's stored screen) as the read service would answer."""
    from assets.serving import cache_dir, recommendations_uri
    from homefeed.cache import CacheReader

    reader = CacheReader(cache_dir(settings), refresh_s=0)
    if reader.version is None:
        return None, None
    recs = delta.read(recommendations_uri(settings))
    row = recs.filter(pl.col("serve_date") == recs["serve_date"].max()).row(0, named=True)
    return reader.version.name, reader.get(row["user_id"], row["platform"])


def names(message: str, file: str | None, column: str | None, row: bool) -> dict:
    return {"file": bool(file) and file in message, "column": bool(column) and column in message,
            "row": row and " row " in message}


def gold(snap: dict) -> dict:
    return {t: df for t, df in snap.items() if t.startswith("gold/")}


def record(fault_drill, *, outcome: str, message: str, named: dict, gold_equal: bool, cache: bool) -> None:
    fault_drill.detail.update(outcome=outcome, message=message[:600], names=named,
                              gold_equals_rebuild=gold_equal, cache_served=cache)


# ---------------------------------------------------------------- re-runs of a committed day

def _break_rerun(s, case: str) -> tuple[str | None, str | None, bool]:
    """Break day 3's landing as `case` says; returns (file, column, row) a message should name."""
    path = landing_file(s, "workouts", DAY3)
    manifest = path.parents[2] / "_manifests" / f"date={DAY3}.json"
    if case == "missing entity":
        shutil.rmtree(path.parent)
        return path.name, None, False
    if case == "renamed column":
        t = pq.read_table(path)
        pq.write_table(t.rename_columns(["userId" if c == "user_id" else c for c in t.column_names]), path)
        seal(path.parents[2], DAY3)  # the exporter's manifest agrees with its broken file
        return path.name, "user_id", True
    if case == "retyped column":
        t = pq.read_table(path)
        epoch = pa.compute.cast(pa.compute.cast(t["start_ts"], pa.int64()), pa.int64())
        pq.write_table(t.set_column(t.schema.get_field_index("start_ts"), "start_ts", epoch), path)
        seal(path.parents[2], DAY3)
        return path.name, "start_ts", True
    doc = json.loads(manifest.read_text())
    entry = next(f for f in doc["files"] if f["entity"] == "workouts")
    if case == "manifest lists a missing file":
        doc["files"].append({**entry, "path": entry["path"].replace("part-0000", "part-0001")})
        manifest.write_text(json.dumps(doc))
        return "part-0001.parquet", None, False
    entry["rows"] += 500  # "manifest counts wrong"
    manifest.write_text(json.dumps(doc))
    return path.name, None, False


RERUNS = ["missing entity", "renamed column", "retyped column", "manifest lists a missing file",
          "manifest counts wrong"]


@pytest.mark.parametrize("case", RERUNS)
def test_a_broken_rerun_of_a_committed_day_loses_nothing(served, reference, tmp_path, fault_drill, case):
    fault_drill.fault = f"re-run of a committed day: {case}"
    s = copy_lake(served, tmp_path / "data")
    workouts = landing_file(s, "workouts", DAY3)
    good = {p: p.read_bytes() for p in workouts.parents[2].rglob("*") if p.is_file() and f"date={DAY3}" in str(p)}
    before, cache_before = snapshot(s), cache_state(s)
    file, column, row = _break_rerun(s, case)
    fault_drill.injected()
    result = run_job(s, day=DAY3, job=DAILY, run_config=NO_RAY)
    assert not result.success
    (message,) = errors(result)
    print(f"\n{case}: {message[:400]}")
    after = snapshot(s)
    record_rows(fault_drill, after, before)  # nothing committed was lost or duplicated
    assert_same(after, before)
    gold_equal = True
    assert_same(gold(after), gold(reference[1]))  # still what the good landing builds
    cache = cache_state(s) == cache_before and cache_before[1] is not None
    assert cache
    assert names(message, file, column, row)["file" if file else "column"]
    if column:
        assert column in message
    # the app re-sends the day as it should be: green again, same tables
    shutil.rmtree(workouts.parent, ignore_errors=True)
    for p, body in good.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
    assert_ok(run_job(s, day=DAY3, job=DAILY, run_config=NO_RAY))
    fault_drill.recovered()
    assert_same(gold(snapshot(s)), gold(reference[1]))
    record(fault_drill, outcome="failed, nothing committed", message=message,
           named=names(message, file, column, row), gold_equal=gold_equal, cache=cache)


# ---------------------------------------------------------------- a late correction

@pytest.mark.fault("late correction of an older day")
def test_a_late_correction_converges_to_a_rebuild(served, landed, tmp_path, fault_drill):
    from orchestration.sensors import correction_sensor
    from tests.pipeline_runs import correct_day

    s = copy_lake(served, tmp_path / "data")
    cache_before = cache_state(s)
    instance = dg.DagsterInstance.ephemeral()
    n_before, n_after = correct_day(s, DAY2)
    fault_drill.injected()
    rerun = run_job(s, day=DAY2, job=DAILY, run_config=NO_RAY, instance=instance)
    assert_ok(rerun)
    from assets.resources import LakehouseResource

    request = correction_sensor(dg.build_sensor_context(
        instance=instance, resources={"lakehouse": LakehouseResource(uri=s.uri, data_dir=s.data_dir)}))
    assert isinstance(request, dg.RunRequest), request
    assert request.tags["dagster/asset_partition_range_end"] == DAY3.isoformat()
    assert_ok(run_job(s, tags=request.tags, job="recompute_features_job", instance=instance))
    fault_drill.recovered()
    rebuilt = copy_lake(landed, tmp_path / "rebuilt")
    correct_day(rebuilt, DAY2)
    assert_ok(run_job(rebuilt, days=(DAY1, DAY3)))
    want = {t: df for t, df in snapshot(rebuilt).items()}
    after = snapshot(s)
    assert_same(gold(after), gold(want))
    # committed rows of the other days are all there; day 2's workouts are the corrected ones
    record_rows(fault_drill, committed_before(after, DAY2), committed_before(want, DAY2))
    cache = cache_state(s) == cache_before  # day 3's cache is newer than day 2's: kept
    assert cache
    fault_drill.detail.update(workouts_before=n_before, workouts_after=n_after)
    record(fault_drill, outcome="succeeded; correction sensor recomputed "
           f"{request.tags['dagster/asset_partition_range_start']}..{request.tags['dagster/asset_partition_range_end']}",
           message="", named={}, gold_equal=True, cache=cache)


# ---------------------------------------------------------------- one strictness for every format

@pytest.mark.fault("float in an integer column (new day)")
def test_a_float_in_an_integer_column_is_quarantined_not_truncated(served, landed, tmp_path, fault_drill):
    s = copy_lake(served, tmp_path / "data")
    path = landing_file(s, "classes", DAY4)
    t = pq.read_table(path)
    n = max(1, t.num_rows // 3)  # a few rows: most of a day rejected would fail quarantine_share
    duration = pa.array([x + 0.7 if i < n else float(x) for i, x in enumerate(t["duration_min"].to_pylist())],
                        pa.float64())
    pq.write_table(t.set_column(t.schema.get_field_index("duration_min"), "duration_min", duration), path)
    seal(path.parents[2], DAY4)
    before = snapshot(s)
    fault_drill.injected()
    result = run_job(s, day=DAY4, job=DAILY, run_config=NO_RAY)
    assert_ok(result)
    fault_drill.recovered()
    q = delta.read(s.table_uri("bronze", "quarantine"),
                   where=(pl.col("entity") == "classes") & (pl.col("landing_date") == DAY4))
    assert q.height == n
    reason = q.sort("row_number")["reason"][0]
    assert "duration_min: expected int32, got '" in reason and ".7'" in reason
    assert set(q["row_number"]) == set(range(1, n + 1)) and q["source_file"].str.ends_with(path.name).all()
    bronze = delta.read(s.table_uri("bronze", "classes"), where=pl.col("landing_date") == DAY4)
    assert bronze.height == t.num_rows - n  # the rest landed, not truncated into bronze
    after = snapshot(s)
    record_rows(fault_drill, committed_before(after, DAY4), committed_before(before, DAY4))
    rebuilt = copy_lake(landed, tmp_path / "rebuilt")
    shutil.copy(path, landing_file(rebuilt, "classes", DAY4))
    seal(landing_file(rebuilt, "classes", DAY4).parents[2], DAY4)
    assert_ok(run_job(rebuilt, days=(DAY1, DAY4)))
    assert_same(gold(after), gold(snapshot(rebuilt)))
    version, screen = cache_state(s)
    assert screen is not None
    message = f"{q['source_file'][0]} row {q.sort('row_number')['row_number'][0]}: {reason}"
    record(fault_drill, outcome="succeeded, the rows quarantined", message=message,
           named=names(message, path.name, "duration_min", True), gold_equal=True, cache=True)
