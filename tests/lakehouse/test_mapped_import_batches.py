"""The mapped import reads its sources in batches: every check holds across batch boundaries
(a duplicated key in two batches, a take value only in a later one, mixed formats split between
batches, row numbers counted over the whole file), the id grammar is enforced on every id, and
the Delta tables it writes day by day read back as one commit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lakehouse.mapped.sources as sources
import lakehouse.mapped.staging as staging
import lakehouse.mapped.write as writing
from lakehouse.contract import ID_RULE
from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from lakehouse.mapped.importer import INTERACTIONS, ITEMS, USERS, SourceDataError, import_dataset
from lakehouse.mapped.mapping_file import parse_mapping

TABLES = (INTERACTIONS, USERS, ITEMS)
MS1 = 1788220800000  # 2026-09-01T00:00:00Z
HOUR = 3_600_000
D1 = dt.date(2026, 9, 1)


@pytest.fixture(autouse=True)
def tiny_batches(monkeypatch):
    """Batches of 2 Parquet rows, 64-byte CSV/JSON Lines blocks, staged row groups of 2 rows,
    streams of 2 rows and data files of about 3 rows: every file here spans several batches."""
    monkeypatch.setattr(sources, "BATCH_ROWS", 2)
    monkeypatch.setattr(sources, "BLOCK_BYTES", 64)
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 64)
    monkeypatch.setattr(staging, "STAGE_GROUP_ROWS", 2)
    monkeypatch.setattr(staging, "STAGE_PENDING_ROWS", 3)
    monkeypatch.setattr(staging, "STAGE_FILE_GROUPS", {"day": 2, "one": 3})
    monkeypatch.setattr(staging, "STREAM_ROWS", 2)
    monkeypatch.setattr(writing, "ROW_GROUP_ROWS", 2)
    monkeypatch.setattr(writing, "FILE_ROWS", 3)


@pytest.fixture
def settings(tmp_path):
    return LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path / "state"))


def quiet(_msg):
    pass


def events_csv(path: Path, rows: list[tuple], header="listener,track,ts,action") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def plays(n: int, action="play", user="u{i}") -> list[tuple]:
    return [(user.format(i=i), f"t{i % 3}", MS1 + i * HOUR, action) for i in range(n)]


def mapping(src: Path, **over) -> object:
    it = {"path": "events", "user": "listener", "item": "track", "timestamp": {"column": "ts", "unit": "ms"},
          "event": {"column": "action", "take": ["play"]}}
    m = {"name": "batches", "source": str(src), "interactions": it}
    for key, value in over.items():
        (m if key in ("users", "items") else it)[key] = value
    return parse_mapping(m, origin=str(src / "mapping.yaml"))


def versions(settings) -> dict:
    return {t: delta.table_version(settings.table_uri("bronze", t)) for t in TABLES}


def failure(settings, m) -> str:
    with pytest.raises(SourceDataError) as err:
        import_dataset(settings, m, log=quiet)
    assert versions(settings) == {t: None for t in TABLES}  # nothing was written
    assert not list(Path(settings.data_dir).glob("mapped-import-*"))  # the staging folder is gone
    return str(err.value)


def test_row_numbers_and_examples_count_over_the_whole_file(settings, tmp_path):
    rows = plays(9)
    rows[6] = ("", "t1", MS1, "play")  # row 7: in the fourth CSV block
    events_csv(tmp_path / "events" / "a.csv", rows)
    text = failure(settings, mapping(tmp_path))
    assert ("a.csv: column 'listener' (interactions.user): empty or null id; every row needs one; "
            f"e.g. row 7: listener=null, track='t1', ts='{MS1}', action='play'") in text
    pq.write_table(pa.table({"listener": [r[0] or None for r in rows], "track": [r[1] for r in rows],
                             "ts": [r[2] for r in rows], "action": [r[3] for r in rows]}),
                   tmp_path / "events" / "a.parquet")
    (tmp_path / "events" / "a.csv").unlink()
    text = failure(settings, mapping(tmp_path))
    assert f"a.parquet: column 'listener' (interactions.user): empty or null id; every row needs one; e.g. row 7" in text


def test_a_problem_in_several_batches_is_one_problem_with_every_row_counted(settings, tmp_path):
    rows = plays(10)
    for i in (1, 4, 8):  # in three different batches
        rows[i] = (rows[i][0], rows[i][1], "yesterday", "play")
    events_csv(tmp_path / "events" / "a.csv", rows)
    text = failure(settings, mapping(tmp_path))
    assert text.count("column 'ts'") == 1, text
    assert ("mixed timestamp formats: some values are not epoch numbers [3 row(s)]; e.g. row 2: "
            "listener='u1', track='t1', ts='yesterday'") in text
    assert f"(while row 1: listener='u0', track='t0', ts='{MS1}', action='play' is a number)" in text


def test_mixed_formats_are_found_when_the_other_format_comes_in_a_later_batch(settings, tmp_path):
    # epoch numbers only in the first batches, ISO text only in the last: mixed, not "not epoch"
    rows = plays(6) + [("u9", "t1", "2026-09-01T08:00:00Z", "play")]
    events_csv(tmp_path / "events" / "a.csv", rows)
    text = failure(settings, mapping(tmp_path))
    assert "(interactions.timestamp, unit 'ms'): mixed timestamp formats: some values are not epoch numbers" in text
    assert "e.g. row 7: listener='u9'" in text and "while row 1: listener='u0'" in text
    # and the other way round: ISO text first, one epoch number at the end
    rows = [(u, t, dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).isoformat(), a) for u, t, ts, a in plays(6)]
    events_csv(tmp_path / "events" / "a.csv", rows + [("u9", "t1", MS1, "play")])
    text = failure(settings, mapping(tmp_path, timestamp={"column": "ts", "unit": "iso"}))
    assert ("(interactions.timestamp, unit 'iso'): mixed timestamp formats: some values are not ISO-8601 "
            "text (epoch numbers among text timestamps); e.g. row 7") in text


def test_a_unit_off_by_1000_in_a_later_batch_is_named(settings, tmp_path):
    rows = plays(6)
    rows[5] = ("u5", "t2", MS1 * 1000, "play")  # microseconds in a millisecond column
    events_csv(tmp_path / "events" / "a.csv", rows)
    text = failure(settings, mapping(tmp_path))
    assert ("column 'ts' (interactions.timestamp, unit 'ms'): implausible epoch milliseconds: "
            f"{MS1 * 1000} would be the year") in text
    assert "is the unit us?" in text and "e.g. row 6: listener='u5'" in text


def test_a_take_value_that_occurs_only_in_a_later_batch_is_enough(settings, tmp_path):
    rows = plays(8, action="skip") + [("u8", "t2", MS1 + 9 * HOUR, "play")]
    events_csv(tmp_path / "events" / "a.csv", rows)
    report = import_dataset(settings, mapping(tmp_path), log=quiet)
    assert report.event_types == {"other": 8, "take": 1}
    # and none at all is refused, with what the column holds
    events_csv(tmp_path / "events" / "a.csv", rows[:-1])
    with pytest.raises(SourceDataError, match=r"none of interactions.event.take \['play'\] occurs in column "
                                              r"'action' of .*a.csv; values found \(rows\): 'skip' \(8\)"):
        import_dataset(settings, mapping(tmp_path), log=quiet)


def test_duplicated_side_keys_across_batches_and_files(settings, tmp_path):
    events_csv(tmp_path / "events" / "a.csv", plays(4))
    pq.write_table(pa.table({"track_id": ["t0", "t1", "t2", "t3", "t1"], "genre": list("abcde")}),
                   tmp_path / "tracks.parquet")
    text = failure(settings, mapping(tmp_path, items={"path": "tracks.parquet", "key": "track_id",
                                                      "categorical": ["genre"]}))
    assert ("tracks.parquet: column 'track_id' (items.key): key 't1' appears 2 times; each item needs one "
            "row (1 duplicated key(s)); e.g. row 2: track_id='t1', genre='b' and row 5: track_id='t1', "
            "genre='e'") in text
    # the same key in two files of a folder (JSON Lines, one line per block)
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "a.jsonl").write_text("".join(json.dumps({"id": f"u{i}", "age": i}) + "\n" for i in range(4)))
    (tmp_path / "users" / "b.jsonl").write_text(json.dumps({"id": "u9", "age": 9}) + "\n"
                                                + json.dumps({"id": "u2", "age": 99}) + "\n")
    text = failure(settings, mapping(tmp_path, users={"path": "users", "key": "id", "numeric": ["age"]}))
    assert (f"{tmp_path / 'users' / 'a.jsonl'}: column 'id' (users.key): key 'u2' appears 2 times; each user "
            f"needs one row (1 duplicated key(s)); e.g. row 3: id='u2', age=2 and row 2: id='u2', age=99 "
            f"of {tmp_path / 'users' / 'b.jsonl'}") in text


def test_json_lines_keys_may_appear_in_a_later_block_only(settings, tmp_path):
    (tmp_path / "events").mkdir()
    lines = [{"listener": f"u{i}", "track": "t1", "ts": MS1 + i, "action": "play"} for i in range(6)]
    lines[5]["battery"] = 42  # the only line with the key: null elsewhere
    (tmp_path / "events" / "a.jsonl").write_text("\ufeff" + "".join(json.dumps(x) + "\n" for x in lines))
    report = import_dataset(settings, mapping(tmp_path, context={"numeric": ["battery"]}), log=quiet)
    inter = delta.read(settings.table_uri("bronze", INTERACTIONS)).sort("user_id")
    assert report.tables[INTERACTIONS].rows_written == 6
    assert inter["ctx_battery"].to_list() == [None] * 5 + [42.0]
    # a key no line has is a missing column, named once with the keys the file has
    fresh = LakehouseSettings.build(uri=str(tmp_path / "lake2"), data_dir=str(tmp_path / "state2"))
    text = failure(fresh, mapping(tmp_path, context={"numeric": ["network"]}))
    assert ("a.jsonl: column 'network' (interactions.context.numeric): is not in the file; its columns are: "
            "listener, track, ts, action, battery") in text
    assert "empty" not in text


@pytest.mark.parametrize("bad, where", [
    ("user 7", "listener"), ("a/b", "listener"), ("x" * 129, "listener"), ("😀", "listener"),
    ("-lead", "track"), ("tab\there", "track"),
])
def test_ids_that_break_the_id_grammar_are_refused(settings, tmp_path, monkeypatch, bad, where):
    monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 256)  # a CSV block holds at least a whole row
    rows = plays(5)
    rows[3] = (bad, "t1", MS1, "play") if where == "listener" else ("u3", bad, MS1, "play")
    events_csv(tmp_path / "events" / "a.csv", rows)
    text = failure(settings, mapping(tmp_path))
    field = "interactions.user" if where == "listener" else "interactions.item"
    assert f"a.csv: column '{where}' ({field}): not a valid id ({ID_RULE}); e.g. row 4: " in text, text
    assert len(text) < 1500  # a long id is cut in the example


def test_side_table_keys_follow_the_id_grammar_and_numeric_ids_pass(settings, tmp_path):
    # MovieLens-like numeric ids: text in CSV, integers in Parquet and JSON Lines
    events_csv(tmp_path / "events" / "a.csv", [(196, 242, MS1 + i, "play") for i in range(3)])
    pq.write_table(pa.table({"item": pa.array([242, 243], pa.int64()), "year": [1996, 1997]}), tmp_path / "items.parquet")
    (tmp_path / "users.jsonl").write_text(json.dumps({"user": 196}) + "\n" + json.dumps({"user": "josé_7"}) + "\n")
    m = mapping(tmp_path, users={"path": "users.jsonl", "key": "user"},
                items={"path": "items.parquet", "key": "item", "numeric": ["year"]})
    report = import_dataset(settings, m, log=quiet)
    assert report.tables[INTERACTIONS].rows_written == 3
    assert sorted(delta.read(settings.table_uri("bronze", USERS))["user_id"]) == ["196", "josé_7"]
    assert sorted(delta.read(settings.table_uri("bronze", ITEMS))["item_id"]) == ["242", "243"]
    (tmp_path / "users.jsonl").write_text(json.dumps({"user": "196"}) + "\n" + json.dumps({"user": "a b"}) + "\n")
    settings2 = LakehouseSettings.build(uri=str(tmp_path / "lake2"), data_dir=str(tmp_path / "state2"))
    text = failure(settings2, m)
    assert f"users.jsonl: column 'user' (users.key): not a valid id ({ID_RULE}); e.g. row 2: user='a b'" in text


def test_days_are_written_in_several_files_and_replaced_in_one_commit(settings, tmp_path):
    rows = [(f"u{i}", "t1", MS1 + (i % 2) * 24 * HOUR + i, "play") for i in range(10)]  # 5 rows a day
    events_csv(tmp_path / "events" / "a.csv", rows)
    report = import_dataset(settings, mapping(tmp_path), log=quiet)
    uri = settings.table_uri("bronze", INTERACTIONS)
    assert report.tables[INTERACTIONS].version == 1 and report.days_written == [D1, D1 + dt.timedelta(days=1)]
    files = list(Path(uri).glob("event_date=*/*.parquet"))
    assert len(files) == 4  # 5 rows a day: a file of 4 (closed past 3 rows) and one of 1
    first = delta.read(uri).sort("user_id")
    assert first.height == 10 and first["interaction_id"].n_unique() == 10
    # a re-import of day 2 with a new context column: one commit, day 1 untouched, the column added
    rows[1] = ("u1", "t2", rows[1][2], "play")
    events_csv(tmp_path / "events" / "a.csv", [r + ("wifi",) for r in rows], header="listener,track,ts,action,network")
    report = import_dataset(settings, mapping(tmp_path, context={"categorical": ["network"]}),
                            days=[D1 + dt.timedelta(days=1)], log=quiet)
    assert report.tables[INTERACTIONS].version == 2
    after = delta.read(uri).sort("user_id")
    assert after.height == 10
    assert after.filter(pl.col("event_date") == D1).drop("ctx_network").equals(
        first.filter(pl.col("event_date") == D1))
    day2 = after.filter(pl.col("event_date") != D1)
    assert set(day2["ctx_network"]) == {"wifi"} and "t2" in set(day2["item_id"])
    assert after.filter(pl.col("event_date") == D1)["ctx_network"].is_null().all()
    assert pl.read_delta(uri).height == 10  # polars reads the table written file by file


def test_a_commit_lost_to_a_concurrent_writer_is_retried_with_the_same_files(settings, tmp_path, monkeypatch):
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    events_csv(tmp_path / "events" / "a.csv", plays(4))
    real, calls = DeltaTable.create_write_transaction, []

    def loses_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise CommitFailedError("Transaction failed: a concurrent transaction committed first")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", loses_once)
    monkeypatch.setattr(delta, "COMMIT_BACKOFF_S", 0)
    report = import_dataset(settings, mapping(tmp_path), log=quiet)
    assert len(calls) == 4  # the interactions twice, then the two side tables
    assert report.versions == {INTERACTIONS: 1, USERS: 1, ITEMS: 1}
    assert delta.read(settings.table_uri("bronze", INTERACTIONS)).height == 4
