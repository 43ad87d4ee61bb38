"""Bronze ingest: contract, quarantine, idempotence, and bad files that lose nothing."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from lakehouse import delta
from lakehouse.ingest import LandingFileError, ingest_days
from lakehouse.settings import LakehouseSettings
from tests.landing_factory import DAY0, workout, write_day, write_jsonl, write_parquet

DAY1 = DAY0 + dt.timedelta(days=1)


@pytest.fixture
def settings(tmp_path):
    return LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))


def landing(settings):
    from pathlib import Path
    return Path(settings.landing_uri)


def bronze(settings, entity):
    return delta.read(settings.table_uri("bronze", entity))


def quarantine(settings):
    return delta.read(settings.table_uri("bronze", "quarantine"))


def test_clean_days_land_in_bronze_with_contract_types(settings):
    write_day(landing(settings), DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    write_day(landing(settings), DAY1, with_catalogue=False, workouts=[workout("w2", "u2", "c2", DAY1)])
    report = ingest_days(settings, [DAY0, DAY1])
    w = bronze(settings, "workouts")
    assert sorted(w["workout_id"].to_list()) == ["w1", "w2"]
    assert w.schema["start_ts"] == pl.Datetime("us", "UTC")
    assert w.schema["landing_date"] == pl.Date
    assert report.rows_quarantined == 0
    # JSONL values arrive as strings and are typed by the contract
    imp = bronze(settings, "impressions")
    assert imp.schema["position"] == pl.Int32 and imp.height == 6


def test_rerunning_a_day_replaces_only_that_day(settings):
    write_day(landing(settings), DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    write_day(landing(settings), DAY1, with_catalogue=False, workouts=[workout("w2", "u2", "c2", DAY1)])
    ingest_days(settings, [DAY0, DAY1])
    # the export of day 1 is re-sent with one more workout
    write_parquet(landing(settings), "workouts", DAY1,
                  [workout("w2", "u2", "c2", DAY1), workout("w3", "u3", "c3", DAY1, hour=9)])
    ingest_days(settings, [DAY1])
    ingest_days(settings, [DAY1])  # twice: still one copy of every row
    w = bronze(settings, "workouts").sort("workout_id")
    assert w["workout_id"].to_list() == ["w1", "w2", "w3"]
    assert w.filter(pl.col("workout_id") == "w1")["landing_date"].item() == DAY0


def test_bad_rows_go_to_quarantine_with_reasons(settings):
    lz = landing(settings)
    write_day(lz, DAY0, with_catalogue=True, workouts=[
        workout("w1", "u1", "c1", DAY0),
        workout("w2", "u1", "c1", DAY0, minutes=-5.0),            # negative duration
        workout("w3", "u404", "c1", DAY0),                        # unknown user
        workout("w1", "u2", "c2", DAY0, hour=9),                  # duplicate key
        workout("w4", "u2", "c2", DAY0, platform="rowing"),       # not an accepted value
        workout("w5", "u2", "c2", DAY1),                          # not on the landing day
    ])
    # JSON lines: a mistyped value, a missing field, and a truncated line
    write_jsonl(lz, "impressions", DAY0, [
        dict(impression_id="ok", user_id="u1", platform="app", shown_ts="2026-09-01T06:00:00Z", class_id="c1", position=1),
        dict(impression_id="typed", user_id="u1", platform="app", shown_ts="2026-09-01T06:00:00Z", class_id="c1", position="top"),
        dict(impression_id="nouser", platform="app", shown_ts="2026-09-01T06:00:00Z", class_id="c1", position=2),
        '{"impression_id": "cut", "user_id": "u1", "plat',
    ])
    report = ingest_days(settings, [DAY0])
    assert bronze(settings, "workouts")["workout_id"].to_list() == ["w1"]
    q = quarantine(settings)
    by_row = {(r["entity"], r["row_number"]): r["reason"] for r in q.iter_rows(named=True)}
    assert "minutes: -5.0 below minimum 0" in by_row[("workouts", 2)]
    assert "user_id: unknown user id 'u404'" in by_row[("workouts", 3)]
    assert "duplicate key (workout_id) w1" in by_row[("workouts", 4)]
    assert "platform: 'rowing' not one of" in by_row[("workouts", 5)]
    assert "is not on the landing day 2026-09-01" in by_row[("workouts", 6)]
    assert "position: expected int32, got 'top'" in by_row[("impressions", 2)]
    assert "user_id: missing value (required)" in by_row[("impressions", 3)]
    assert "not a valid JSON object" in by_row[("impressions", 4)]
    # nothing is dropped silently: every row read is either in bronze or in quarantine
    for name, res in report.entities.items():
        assert res.rows_read == res.rows_valid + res.rows_quarantined, name
    assert report.entities["workouts"].rows_quarantined == 5
    # the raw record is kept for replay
    rec = q.filter((pl.col("entity") == "workouts") & (pl.col("row_number") == 3))["record"].item()
    assert '"u404"' in rec and q["source_file"].str.ends_with(".parquet").any()


def test_a_key_already_ingested_on_another_day_is_quarantined(settings):
    write_day(landing(settings), DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    ingest_days(settings, [DAY0])
    # yesterday's rows repeated in today's export
    write_day(landing(settings), DAY1, with_catalogue=False, workouts=[
        workout("w1", "u1", "c1", DAY0), workout("w9", "u1", "c1", DAY1)])
    ingest_days(settings, [DAY1])
    assert sorted(bronze(settings, "workouts")["workout_id"].to_list()) == ["w1", "w9"]
    reasons = quarantine(settings).filter(pl.col("landing_date") == DAY1)["reason"].to_list()
    assert any("already ingested on landing day 2026-09-01" in r for r in reasons)


@pytest.mark.parametrize("damage", ["truncated_parquet", "not_parquet", "binary_jsonl", "unsupported"])
def test_unreadable_file_fails_the_run_names_the_file_and_writes_nothing(settings, damage):
    lz = landing(settings)
    write_day(lz, DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    ingest_days(settings, [DAY0])
    versions = {e: delta.table_version(settings.table_uri("bronze", e)) for e in ("workouts", "impressions", "quarantine")}
    write_day(lz, DAY1, with_catalogue=False, workouts=[workout("w2", "u2", "c2", DAY1)])
    folder = lz / "workouts" / f"date={DAY1}"
    if damage == "truncated_parquet":
        f = folder / "part-0000.parquet"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "not_parquet":
        bad = folder / "part-0001.parquet"
        bad.write_text("user_id,class_id\nu1,c1\n")
    elif damage == "binary_jsonl":
        bad = lz / "impressions" / f"date={DAY1}" / "part-0001.jsonl"
        bad.write_bytes(b"\xff\xfe\x00garbage")
    else:
        bad = folder / "extra.csv"
        bad.write_text("workout_id\nw7\n")
    with pytest.raises(LandingFileError) as err:
        ingest_days(settings, [DAY1])
    msg = str(err.value)
    assert f"date={DAY1}" in msg and ("part-000" in msg or "extra.csv" in msg)
    assert any(word in msg for word in ("Parquet", "UTF-8", "unsupported"))
    # every table is exactly as it was
    for e, v in versions.items():
        assert delta.table_version(settings.table_uri("bronze", e)) == v
    assert bronze(settings, "workouts")["workout_id"].to_list() == ["w1"]


def test_wrong_schema_file_quarantines_rows_naming_the_missing_column(settings):
    lz = landing(settings)
    write_day(lz, DAY0, with_catalogue=True, workouts=[])
    import pyarrow as pa
    schema = pa.schema([("workout_id", pa.string()), ("user_id", pa.string())])
    write_parquet(lz, "workouts", DAY0, [dict(workout_id="w1", user_id="u1")], schema=schema)
    report = ingest_days(settings, [DAY0])
    assert report.entities["workouts"].rows_quarantined == 1
    reason = quarantine(settings).filter(pl.col("entity") == "workouts")["reason"].item()
    assert "class_id: missing column" in reason and "start_ts: missing column" in reason


def test_a_day_without_landing_files_fails_and_keeps_bronze(settings):
    from lakehouse.ingest import MissingLandingError

    write_day(landing(settings), DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    ingest_days(settings, [DAY0])
    version = delta.table_version(settings.table_uri("bronze", "workouts"))
    # the landing files of day 0 expire; someone re-runs the partition
    import shutil
    for folder in landing(settings).glob(f"*/date={DAY0}"):
        shutil.rmtree(folder)
    with pytest.raises(MissingLandingError, match=f"no landing files for {DAY0}.*nothing was written"):
        ingest_days(settings, [DAY0])
    assert delta.table_version(settings.table_uri("bronze", "workouts")) == version
    assert bronze(settings, "workouts")["workout_id"].to_list() == ["w1"]
