"""Bronze ingest: contract, quarantine, idempotence, and bad files that lose nothing."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from lakehouse.landing.ingest import AuditSettings, ingest_days
from lakehouse.landing.read import LandingFileError
from tests.landing_factory import DAY0, seal, workout, write_day, write_jsonl, write_parquet

# tests of the quarantine itself: most of a tiny day may be rejected on purpose
QUARANTINE_ANY = AuditSettings(max_quarantine_share=1.0)

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
    seal(landing(settings), DAY1)
    report = ingest_days(settings, [DAY1])
    assert report.entities["workouts"].corrected_days == [DAY1]  # a committed day changed
    assert report.entities["users"].corrected_days == []
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
    seal(lz, DAY0)
    report = ingest_days(settings, [DAY0], audit=QUARANTINE_ANY)
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


def _list_in_manifest(lz, day, path, rows=0):
    """An exporter that lists a broken file in its manifest (size and checksum of what is there)."""
    import hashlib
    import json

    mpath = lz / "_manifests" / f"date={day}.json"
    doc = json.loads(mpath.read_text())
    rel = str(path.relative_to(lz))
    body = path.read_bytes()
    entry = {"path": rel, "entity": rel.split("/")[0], "rows": rows, "bytes": len(body),
             "sha256": hashlib.sha256(body).hexdigest()}
    doc["files"] = [f for f in doc["files"] if f["path"] != rel] + [entry]
    mpath.write_text(json.dumps(doc))


@pytest.mark.parametrize("listed", [False, True], ids=["manifest_catches_it", "reader_catches_it"])
@pytest.mark.parametrize("damage", ["truncated_parquet", "not_parquet", "binary_jsonl", "unsupported"])
def test_unreadable_file_fails_the_run_names_the_file_and_writes_nothing(settings, damage, listed):
    lz = landing(settings)
    write_day(lz, DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    ingest_days(settings, [DAY0])
    versions = {e: delta.table_version(settings.table_uri("bronze", e)) for e in ("workouts", "impressions", "quarantine")}
    write_day(lz, DAY1, with_catalogue=False, workouts=[workout("w2", "u2", "c2", DAY1)])
    folder = lz / "workouts" / f"date={DAY1}"
    if damage == "truncated_parquet":
        bad = folder / "part-0000.parquet"
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif damage == "not_parquet":
        bad = folder / "part-0001.parquet"
        bad.write_text("user_id,class_id\nu1,c1\n")
    elif damage == "binary_jsonl":
        bad = lz / "impressions" / f"date={DAY1}" / "part-0001.jsonl"
        bad.write_bytes(b"\xff\xfe\x00garbage")
    else:
        bad = folder / "extra.csv"
        bad.write_text("workout_id\nw7\n")
    if listed and damage != "unsupported":
        _list_in_manifest(lz, DAY1, bad)
    with pytest.raises(LandingFileError) as err:
        ingest_days(settings, [DAY1])
    msg = str(err.value)
    assert f"date={DAY1}" in msg and bad.name in msg
    if listed or damage == "unsupported":
        assert any(word in msg for word in ("Parquet", "UTF-8", "unsupported")), msg
    else:
        assert "the manifest says" in msg or "not listed in the manifest" in msg, msg
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
    seal(lz, DAY0)
    report = ingest_days(settings, [DAY0], audit=QUARANTINE_ANY)
    assert report.entities["workouts"].rows_quarantined == 1
    reason = quarantine(settings).filter(pl.col("entity") == "workouts")["reason"].item()
    assert "class_id: missing column" in reason and "start_ts: missing column" in reason


def test_a_day_without_landing_files_fails_and_keeps_bronze(settings):
    from lakehouse.landing.ingest import MissingLandingError

    write_day(landing(settings), DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    ingest_days(settings, [DAY0])
    version = delta.table_version(settings.table_uri("bronze", "workouts"))
    # the landing files of day 0 expire; someone re-runs the partition
    import shutil
    for folder in landing(settings).glob(f"*/date={DAY0}"):
        shutil.rmtree(folder)
    (landing(settings) / "_manifests" / f"date={DAY0}.json").unlink()
    with pytest.raises(MissingLandingError, match=f"no landing files for {DAY0}.*nothing was written"):
        ingest_days(settings, [DAY0])
    assert delta.table_version(settings.table_uri("bronze", "workouts")) == version
    assert bronze(settings, "workouts")["workout_id"].to_list() == ["w1"]


# ---------------------------------------------------------------- the manifest is the contract

def _two_days(settings):
    lz = landing(settings)
    write_day(lz, DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    write_day(lz, DAY1, with_catalogue=False, workouts=[
        workout("w2", "u2", "c2", DAY1), workout("w3", "u3", "c3", DAY1, hour=9)])
    ingest_days(settings, [DAY0, DAY1])
    return lz, _versions(settings)


def _versions(settings):
    from lakehouse.contract import ENTITIES
    return {e: delta.table_version(settings.table_uri("bronze", e))
            for e in [x.name for x in ENTITIES] + ["quarantine"]}


def test_rerun_of_a_day_whose_entity_folder_is_missing_fails_and_keeps_it(settings):
    import shutil

    from lakehouse.landing.ingest import LandingManifestError

    lz, versions = _two_days(settings)
    shutil.rmtree(lz / "workouts" / f"date={DAY1}")  # the folder went missing, the manifest did not
    with pytest.raises(LandingManifestError) as err:
        ingest_days(settings, [DAY1])
    msg = str(err.value)
    assert f"workouts/date={DAY1}/part-0000.parquet: listed in the manifest (2 rows) but missing" in msg
    assert "nothing was written" in msg
    assert _versions(settings) == versions
    assert sorted(bronze(settings, "workouts")["workout_id"]) == ["w1", "w2", "w3"]


@pytest.mark.parametrize("lie", ["missing_file", "rows", "sha256", "bytes", "extra_file", "no_manifest",
                                 "old_form", "entity_not_named"])
def test_a_manifest_that_disagrees_with_the_files_fails_naming_the_file(settings, lie):
    import json

    from lakehouse.landing.ingest import LandingManifestError

    lz, versions = _two_days(settings)
    path = lz / "_manifests" / f"date={DAY1}.json"
    doc = json.loads(path.read_text())
    wk = next(f for f in doc["files"] if f["entity"] == "workouts")
    expect = wk["path"]
    if lie == "missing_file":
        doc["files"].append({**wk, "path": f"workouts/date={DAY1}/part-0001.parquet"})
        expect = "part-0001.parquet: listed in the manifest (2 rows) but missing"
    elif lie == "rows":
        wk["rows"] += 500
        expect = f"{wk['path']}: 2 rows read, the manifest says 502"
    elif lie == "sha256":
        wk["sha256"] = "0" * 64
        expect = f"{wk['path']}: sha256"
    elif lie == "bytes":
        wk["bytes"] += 1
        expect = "bytes, the manifest says"
    elif lie == "extra_file":
        write_parquet(lz, "workouts", DAY1, [workout("w9", "u1", "c1", DAY1)], name="late.parquet")
        expect = "late.parquet: not listed in the manifest (an extra file)"
    elif lie == "no_manifest":
        path.unlink()
        expect = f"{DAY1}: no manifest at"
    elif lie == "old_form":
        doc = {"date": DAY1.isoformat(), "rows": {"workouts": 2}}
        expect = "'files' is missing"
    else:
        doc["empty"] = [e for e in doc["empty"] if e != "bookmarks"]  # a quiet day, no longer said so
        expect = "['bookmarks'] are not named in the manifest"
    if lie != "no_manifest":
        path.write_text(json.dumps(doc))
    with pytest.raises(LandingFileError) as err:
        ingest_days(settings, [DAY1])
    assert expect in str(err.value), str(err.value)
    assert isinstance(err.value, LandingManifestError)
    assert _versions(settings) == versions


# ---------------------------------------------------------------- audit before the commit

def test_a_rerun_that_would_shrink_a_committed_day_is_refused_unless_allowed(settings):
    from lakehouse.quality.gates import AuditFailedError

    lz, versions = _two_days(settings)
    write_parquet(lz, "workouts", DAY1, [])  # the re-export lost the day's workouts
    seal(lz, DAY1)
    with pytest.raises(AuditFailedError) as err:
        ingest_days(settings, [DAY1])
    msg = str(err.value)
    assert "bronze_workouts:no_shrink" in msg and f"{DAY1}: 2 committed rows -> 0" in msg
    assert "allow_shrink" in msg
    assert _versions(settings) == versions
    report = ingest_days(settings, [DAY1], audit=AuditSettings(allow_shrink=True))
    assert sorted(bronze(settings, "workouts")["workout_id"]) == ["w1"]
    assert report.entities["workouts"].corrected_days == [DAY1]


def test_a_rerun_with_a_renamed_column_is_refused_naming_the_column(settings):
    import pyarrow.parquet as pq

    from lakehouse.quality.gates import AuditFailedError

    lz, versions = _two_days(settings)
    f = lz / "workouts" / f"date={DAY1}" / "part-0000.parquet"
    t = pq.read_table(f)
    pq.write_table(t.rename_columns(["userId" if c == "user_id" else c for c in t.column_names]), f)
    seal(lz, DAY1)
    with pytest.raises(AuditFailedError) as err:
        ingest_days(settings, [DAY1])
    msg = str(err.value)
    assert "quarantine_share" in msg and "user_id: missing column" in msg
    assert "no_shrink" in msg
    assert _versions(settings) == versions


# ---------------------------------------------------------------- one strictness for every format

def test_a_float_in_an_integer_column_is_quarantined_in_every_format(settings):
    import pyarrow as pa

    from lakehouse.contract import BY_NAME

    lz = landing(settings)
    write_day(lz, DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    cls = [dict(class_id="c7", title="Ride", instructor_id="i1", discipline="cycling", equipment="bike",
                duration_min=d, difficulty=5.0, body_focus="lower", music_genre="pop",
                release_ts=dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc)) for d in (45.7, 180.9, 30.0)]
    for i, c in enumerate(cls):
        c["class_id"] = f"c{7 + i}"
    schema = pa.schema([pa.field("duration_min", pa.float64()) if f.name == "duration_min" else f
                        for f in BY_NAME["classes"].schema])
    write_parquet(lz, "classes", DAY0, cls, name="more.parquet", schema=schema)
    write_jsonl(lz, "impressions", DAY0, [
        dict(impression_id=f"j{i}", user_id="u1", platform="app", shown_ts="2026-09-01T06:00:00Z",
             class_id="c1", position=p) for i, p in enumerate((2.5, 3.0, "4"))], name="more.jsonl")
    seal(lz, DAY0)
    ingest_days(settings, [DAY0], audit=QUARANTINE_ANY)
    q = quarantine(settings)
    reasons = dict(zip(q["record"].str.extract(r'"(?:class_id|impression_id)":"(\w+)"'), q["reason"]))
    assert "duration_min: expected int32, got '45.7'" in reasons["c7"]
    assert "duration_min: expected int32, got '180.9'" in reasons["c8"]  # not truncated to 180
    assert "position: expected int32, got '2.5'" in reasons["j0"]
    classes = bronze(settings, "classes")
    assert classes.filter(pl.col("class_id") == "c9")["duration_min"].item() == 30  # a whole number fits
    assert set(bronze(settings, "impressions")["impression_id"]) >= {"j1", "j2"}


def test_nan_and_infinity_are_quarantined_and_a_bom_is_accepted(settings):
    lz = landing(settings)
    write_day(lz, DAY0, with_catalogue=True, workouts=[
        workout("w1", "u1", "c1", DAY0), workout("w2", "u1", "c1", DAY0, hour=8, minutes=float("nan")),
        workout("w3", "u1", "c1", DAY0, hour=9, output_kj=float("inf"))])
    jl = lz / "music_likes" / f"date={DAY0}" / "part-0000.jsonl"
    jl.write_bytes("\ufeff".encode() + jl.read_bytes())  # a UTF-8 byte order mark
    lines = ['{"impression_id": "n1", "user_id": "u1", "platform": "app", "shown_ts": "2026-09-01T06:00:00Z", '
             '"class_id": "c1", "position": NaN}']
    write_jsonl(lz, "impressions", DAY0, lines, name="nan.jsonl")
    seal(lz, DAY0)
    ingest_days(settings, [DAY0], audit=QUARANTINE_ANY)
    q = quarantine(settings)
    by = {(r["entity"], r["row_number"]): r["reason"] for r in q.iter_rows(named=True)}
    assert "minutes: expected a finite number, got 'NaN'" in by[("workouts", 2)]
    assert "output_kj: expected a finite number, got 'inf'" in by[("workouts", 3)]
    assert "position: expected int32, got 'nan'" in by[("impressions", 1)]
    assert bronze(settings, "music_likes").height == 1  # line 1 after the BOM is a row
    assert q.filter(pl.col("entity") == "music_likes").height == 0


def test_ids_follow_one_grammar(settings):
    lz = landing(settings)
    bad = {"long": "u" * 10_000, "dots": "../etc", "nul": "u\x001", "emoji": "u\U0001F600", "space": "u 1"}
    good = ["josé", "用户7", "a.b@c:d+e-f_g", "196"]
    users = [dict(user_id=u, signup_ts=dt.datetime(2026, 9, 1, 1, tzinfo=dt.timezone.utc), birth_year=1990,
                  gender="f", country="US", fitness_level="beginner", owns_bike=True, owns_tread=False)
             for u in [*bad.values(), *good]]
    write_day(lz, DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    write_parquet(lz, "users", DAY0, users, name="more.parquet")
    seal(lz, DAY0)
    ingest_days(settings, [DAY0], audit=QUARANTINE_ANY)
    assert set(good) <= set(bronze(settings, "users")["user_id"])
    q = quarantine(settings).filter(pl.col("entity") == "users")
    assert q.height == len(bad)
    assert q["reason"].str.contains("user_id: '.*' is not a valid id \\(1-128 characters").all()
    long_reason = q.filter(pl.col("reason").str.contains("uuuu"))["reason"].item()
    assert len(long_reason) < 300  # the value is echoed in part, not 10,000 characters
