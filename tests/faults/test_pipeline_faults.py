"""Faults around the daily lakehouse job, each injected for real and followed by a real run of
`daily_lakehouse_job` on tiny simulated data: the DuckDB working file lost, a read-only
lakehouse disk, broken landing files, and backfills against daily runs.

Every test starts from a copy of a session-wide lakehouse (tests/conftest.py) (days 1-2 built by one range run, as a
backfill would; or that plus an undisturbed daily run of day 3, the reference) and works on
day 3, so it costs one run after the fault, not a rebuild.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from tests.pipeline_runs import (
    AMBIENT,
    DAY1,
    DAY2,
    DAY3,
    GOLD,
    ROOT,
    assert_ok,
    assert_same,
    committed_before,
    copy_lake,
    count_rows,
    day_rows,
    errors,
    frame,
    lake_settings,
    landing_file,
    record_rows,
    run_job,
    snapshot,
    versions,
)

pytestmark = pytest.mark.slow

# ---------------------------------------------------------------- 1. DuckDB working file lost

@pytest.mark.fault("duckdb working database deleted between runs")
def test_deleted_duckdb_is_rebuilt_from_bronze(backfilled, reference, tmp_path, fault_drill):
    s = copy_lake(backfilled, tmp_path / "data")
    before = snapshot(s)
    duck = Path(s.duckdb_path)
    assert duck.exists()
    for f in (duck, duck.with_name(duck.name + ".wal")):
        f.unlink(missing_ok=True)
    fault_drill.injected()

    result = run_job(s, day=DAY3)
    assert_ok(result)
    fault_drill.recovered()
    assert duck.exists()  # rebuilt

    _, want = reference
    after = snapshot(s)
    record_rows(fault_drill, after, want)
    # day 3's gold equals the undisturbed run's, row for row; bronze too
    assert_same(day_rows(after, DAY3, on=True), day_rows(want, DAY3, on=True))
    assert_same({t: after[t] for t in after if t.startswith("bronze/")},
                {t: want[t] for t in want if t.startswith("bronze/")})
    # the earlier gold days were not touched, nor duplicated
    assert_same(day_rows(after, DAY3, on=False), day_rows(before, DAY3, on=False))
    fault_drill.detail["gold_rows_day3"] = sum(df.height for df in day_rows(after, DAY3, on=True).values())


# ---------------------------------------------------------------- 2. read-only lakehouse disk

def child_main(day: str) -> None:
    """Run the job for `day` in a child process (the read-only mount is the child's alone: a
    private mount namespace) and print its outcome as one JSON line."""
    s = LakehouseSettings.from_env()
    result = run_job(s, day=dt.date.fromisoformat(day))
    print("RESULT " + json.dumps({"success": result.success, "errors": errors(result)}))


_CHILD = "import sys; from tests.faults.test_pipeline_faults import child_main; child_main(sys.argv[1])"

# A bind mount of the folder onto itself, remounted read-only, inside a user + mount namespace:
# a real EROFS (root ignores chmod), visible only to the child.
_RO_MOUNT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'


def read_only_runner(folder: Path) -> tuple[list[str], str] | None:
    """(command prefix that runs a command with `folder` read-only, how) or None if impossible."""
    probe = folder / ".probe"
    if shutil.which("unshare"):
        cmd = ["unshare", "-rm", "sh", "-c", _RO_MOUNT, "sh", str(folder)]
        p = subprocess.run([*cmd, "sh", "-c", f'! touch "{probe}" 2>/dev/null'], capture_output=True)
        written = probe.exists()
        probe.unlink(missing_ok=True)
        if p.returncode == 0 and not written:
            return cmd, "read-only bind mount"
    if os.geteuid() != 0:
        return [], "chmod -R a-w"
    return None


@pytest.mark.drill_only  # a whole failed run and its recovery: `make fault-drill` runs it
@pytest.mark.fault("lakehouse disk read-only")
def test_read_only_lakehouse_fails_clearly_and_recovers(backfilled, reference, tmp_path, fault_drill):
    s = copy_lake(backfilled, tmp_path / "data")
    lake = Path(s.uri)
    runner = read_only_runner(lake)
    if runner is None:
        pytest.skip("no way to make a folder read-only here: running as root (chmod is ignored) "
                    "and `unshare -rm` (user + mount namespace) is not available")
    prefix, how = runner
    fault_drill.detail["how"] = how
    before, before_versions = snapshot(s), versions(s)
    if how.startswith("chmod"):
        subprocess.run(["chmod", "-R", "a-w", str(lake)], check=True)
    env = {**{k: v for k, v in os.environ.items() if k not in AMBIENT}, "LAKEHOUSE_DATA_DIR": s.data_dir}
    fault_drill.injected()
    try:
        p = subprocess.run([*prefix, sys.executable, "-c", _CHILD, DAY3.isoformat()], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    finally:
        if how.startswith("chmod"):
            subprocess.run(["chmod", "-R", "u+w", str(lake)], check=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    child = json.loads(line[len("RESULT "):])
    assert not child["success"]
    (error,) = child["errors"]
    fault_drill.detail["error"] = error
    print(f"\nread-only lakehouse error: {error}")
    # a clear error: the table's path, and that the storage is read-only
    assert "StorageNotWritableError: cannot write " + s.table_uri("bronze", "") in error
    assert ("is read-only" if how.endswith("mount") else "not writable") in error
    # nothing changed: same Delta versions, same rows, no quarantine rows
    assert versions(s) == before_versions
    assert_same(snapshot(s), before)
    assert before["bronze/quarantine"].height == 0

    # writable again (the mount went with the child): the same run succeeds
    result = run_job(s, day=DAY3)
    assert_ok(result)
    fault_drill.recovered()
    _, want = reference
    after = snapshot(s)
    record_rows(fault_drill, after, want)
    assert_same(after, want)


# ---------------------------------------------------------------- 3. landing file faults

@pytest.mark.fault("truncated landing file")
def test_truncated_reexport_fails_naming_it_keeps_the_day_then_recovers(reference, tmp_path, fault_drill):
    """Day 3 is already committed when the app re-sends its export and the upload is cut off:
    the run must fail naming the file and keep the committed day; the fixed re-export then
    materializes day 3 a second time, which must leave one copy of every row."""
    data, want = reference
    s = copy_lake(data, tmp_path / "data")
    path = landing_file(s, "workouts", DAY3)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # an upload cut off half way
    before_versions = versions(s)
    fault_drill.injected()

    result = run_job(s, day=DAY3)
    assert not result.success
    (error,) = errors(result)
    fault_drill.detail["error"] = error
    print(f"\ntruncated landing file error: {error}")
    # the manifest catches it before the file is parsed: named, with what differs
    assert error.startswith("lakehouse.landing.ingest.LandingManifestError: ")
    assert f"{path}: {len(good) // 2} bytes, the manifest says {len(good)}" in error
    assert versions(s) == before_versions  # nothing committed: bronze (and gold) unchanged
    assert_same(snapshot(s), want)

    path.write_bytes(good)  # the app re-exports the file
    assert_ok(run_job(s, day=DAY3))
    fault_drill.recovered()
    after = snapshot(s)
    record_rows(fault_drill, after, want)  # day 3 materialized twice: still one copy of each row
    assert_same(after, want)
    assert versions(s)["bronze/workouts"] > before_versions["bronze/workouts"]


@pytest.mark.drill_only
@pytest.mark.fault("landing file with a wrong schema")
def test_wrong_schema_rows_are_quarantined_naming_the_column(backfilled, tmp_path, fault_drill):
    s = copy_lake(backfilled, tmp_path / "data")
    path = landing_file(s, "workouts", DAY3)
    table = pq.read_table(path)
    half = table.num_rows // 2
    # an app release mid-day renamed a column: the day's second file has no `minutes`. (A whole
    # day without workouts would also stop at the blocking positive_ratio check on gold.)
    renamed = table.slice(half).rename_columns(
        ["duration_min" if c == "minutes" else c for c in table.column_names])
    pq.write_table(table.slice(0, half), path)
    pq.write_table(renamed, path.with_name("part-0001.parquet"))
    before = snapshot(s)
    fault_drill.injected()

    assert_ok(run_job(s, day=DAY3))
    fault_drill.recovered()
    q = delta.read(s.table_uri("bronze", "quarantine"),
                   where=(pl.col("entity") == "workouts") & (pl.col("landing_date") == DAY3))
    # not silently dropped: every row of that file is in the quarantine, with a reason naming the
    # column and the raw record
    assert q.height == renamed.num_rows
    assert q["reason"].str.contains("minutes: missing column").all(), q["reason"].head(3).to_list()
    assert q["source_file"].str.ends_with("part-0001.parquet").all()
    quarantined_ids = sorted(json.loads(r)["workout_id"] for r in q["record"])
    assert quarantined_ids == sorted(renamed["workout_id"].to_pylist())
    # the file with the right schema landed, once
    w3 = frame(s, "bronze", "workouts").filter(pl.col("landing_date") == DAY3)
    assert sorted(w3["workout_id"]) == sorted(table.slice(0, half)["workout_id"].to_pylist())
    # the days committed before are intact, once
    after = snapshot(s)
    assert_same(committed_before(after, DAY3), before)
    record_rows(fault_drill, committed_before(after, DAY3), before)
    assert count_rows(after)[0] == count_rows(after)[1]
    fault_drill.detail.update(landed=table.num_rows, bronze=w3.height, quarantined=q.height,
                              reason=q["reason"][0])


@pytest.mark.drill_only
@pytest.mark.fault("landing file repeating yesterday's rows")
def test_repeated_rows_of_yesterday_are_quarantined_once(backfilled, reference, tmp_path, fault_drill):
    s = copy_lake(backfilled, tmp_path / "data")
    landed = pl.concat([pl.read_parquet(landing_file(s, "workouts", d)) for d in (DAY1, DAY2, DAY3)])
    yesterday = pq.read_table(landing_file(s, "workouts", DAY2))
    # the exporter sent yesterday's file again, beside today's
    pq.write_table(yesterday, landing_file(s, "workouts", DAY3).with_name("part-0001.parquet"))
    fault_drill.injected()

    result = run_job(s, day=DAY3)
    assert_ok(result)
    fault_drill.recovered()
    q = delta.read(s.table_uri("bronze", "quarantine"),
                   where=(pl.col("entity") == "workouts") & (pl.col("landing_date") == DAY3))
    assert q.height == yesterday.num_rows
    duplicate = f"duplicate key (workout_id) already ingested on landing day {DAY2}"
    assert q["reason"].str.contains(duplicate, literal=True).all(), q["reason"].head(3).to_list()
    assert q["source_file"].str.ends_with("part-0001.parquet").all()
    # bronze: exactly one copy of every workout that landed, each on its own day
    w = frame(s, "bronze", "workouts")
    assert w.height == w["workout_id"].n_unique() == landed["workout_id"].n_unique() == landed.height
    repeated = w.filter(pl.col("workout_id").is_in(yesterday["workout_id"].to_pylist()))
    assert repeated.height == yesterday.num_rows and repeated["landing_date"].unique().to_list() == [DAY2]
    # and every table but the quarantine is what a clean day 3 gives
    want = {t: df for t, df in reference[1].items() if t != "bronze/quarantine"}
    after = {t: df for t, df in snapshot(s).items() if t != "bronze/quarantine"}
    record_rows(fault_drill, after, want)
    assert_same(after, want)
    fault_drill.detail.update(quarantined=q.height, reason=q["reason"][0])


# ---------------------------------------------------------------- 4. backfill against daily runs
# (a day materialized twice leaves one copy of every row: the truncated re-export test above)

def test_backfill_equals_the_daily_runs_of_its_days(backfilled, daily_days):
    """One range run of days 1-2 (a backfill) commits exactly what a daily run of day 1 and then
    one of day 2 commit: every bronze and gold table, row for row (both lakehouses are session
    fixtures shared with other tests; the drill below repeats the daily runs and times them)."""
    backfill = snapshot(lake_settings(backfilled))
    daily = snapshot(lake_settings(daily_days))
    for day in (DAY1, DAY2):
        assert all(df.height for df in day_rows(backfill, day, on=True).values()), day
    assert_same(daily, backfill)


@pytest.mark.drill_only
@pytest.mark.fault("backfill vs daily runs")
def test_backfill_equals_daily_runs(landed, backfilled, tmp_path, fault_drill):
    s = copy_lake(landed, tmp_path / "data")
    fault_drill.injected()
    for day in (DAY1, DAY2):
        assert_ok(run_job(s, day=day))
    fault_drill.recovered()
    daily = snapshot(s)
    backfill = snapshot(lake_settings(backfilled))
    assert_same(daily, backfill)
    assert all(backfill[f"gold/{g}"].height for g in GOLD)
    record_rows(fault_drill, daily, backfill)
    fault_drill.detail["tables"] = {t: df.height for t, df in backfill.items()}
