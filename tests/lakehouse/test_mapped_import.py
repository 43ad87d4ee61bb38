"""Importing a mapped dataset into bronze: formats, the bronze contract, ratings, idempotent
re-imports, S3, and bad inputs that are named precisely and write nothing."""

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lakehouse.mapped.sources as sources
import lakehouse.mapped.staging as staging
from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from lakehouse.mapped.importer import INTERACTIONS, ITEMS, USERS, SourceDataError, import_dataset
from lakehouse.mapped.mapping_file import load_mapping, parse_mapping
from simulator.external import ExternalConfig, generate_external

ROOT = Path(__file__).resolve().parents[2]
TABLES = (INTERACTIONS, USERS, ITEMS)
D1, D2 = dt.date(2026, 9, 1), dt.date(2026, 9, 2)
MS1 = 1788220800000  # 2026-09-01T00:00:00Z in epoch milliseconds
HOUR = 3_600_000

EVENTS = [  # listener, track, ts (ms), action, device, network, battery
    ("u1", "t1", MS1 + 8 * HOUR, "play", "phone", "wifi", "80.5"),
    ("u1", "t1", MS1 + 8 * HOUR + 200_000, "full_listen", "phone", "wifi", "80"),
    ("u1", "t1", MS1 + 8 * HOUR + 202_000, "like", "phone", "wifi", ""),
    ("u2", "t2", MS1 + 20 * HOUR, "play", "speaker", "", "100"),
    ("u2", "t2", MS1 + 20 * HOUR + 9_000, "skip", "speaker", "wifi", "100"),
    ("u3", "t1", MS1 + 30 * HOUR, "play", "desktop", "wifi", "55"),  # 2026-09-02 06:00 UTC
    ("u3", "t1", MS1 + 30 * HOUR, "play", "desktop", "wifi", "55"),  # an identical repeat
]
HEADER = "listener,track,ts,action,device,network,battery"


def csv_text(rows, header=HEADER) -> str:
    return header + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)


def event_mapping(src: Path, **over) -> dict:
    m = {
        "name": "listening",
        "source": str(src),
        "interactions": {
            "path": "events", "format": "csv", "user": "listener", "item": "track",
            "timestamp": {"column": "ts", "unit": "ms"}, "platform": "device",
            "context": {"categorical": ["network"], "numeric": ["battery"]},
            "event": {"column": "action", "take": ["play"], "complete": ["full_listen"], "music_like": ["like"]},
        },
        "users": {"path": "users.jsonl", "key": "listener_id", "categorical": ["country"], "numeric": ["age"]},
        "items": {"path": "tracks.parquet", "key": "track_id", "categorical": ["genre"], "numeric": ["duration_s"]},
    }
    for key, value in over.items():
        if key in m["interactions"] or key in ("rating",):
            m["interactions"][key] = value
        else:
            m[key] = value
    return m


def write_source(src: Path, events=EVENTS, users=None, tracks=None) -> Path:
    (src / "events").mkdir(parents=True, exist_ok=True)
    (src / "events" / "part-0.csv").write_text(csv_text(events))
    users = users if users is not None else [
        {"listener_id": "u1", "country": "DE", "age": 31}, {"listener_id": "u2", "country": "FR", "age": None}]
    (src / "users.jsonl").write_text("".join(json.dumps(u) + "\n" for u in users))
    tracks = tracks if tracks is not None else {"track_id": ["t1", "t2", "t9"], "genre": ["jazz", "pop", "rock"],
                                                 "duration_s": [200.0, 180.5, 240.0]}
    pq.write_table(pa.table(tracks), src / "tracks.parquet")
    return src


def mapping_of(src: Path, **over):
    return parse_mapping(event_mapping(src, **over), origin=str(src / "mapping.yaml"), base_dir=src)


@pytest.fixture
def settings(tmp_path):
    return LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))


def bronze(settings, name) -> pl.DataFrame:
    return delta.read(settings.table_uri("bronze", name), storage_options=settings.storage_options())


def versions(settings) -> dict:
    return {t: delta.table_version(settings.table_uri("bronze", t), settings.storage_options()) for t in TABLES}


def quiet(_msg):
    pass


def test_csv_events_with_side_tables_follow_the_bronze_contract(settings, tmp_path):
    src = write_source(tmp_path / "src")
    report = import_dataset(settings, mapping_of(src), log=quiet)

    inter = bronze(settings, INTERACTIONS).sort("event_ts", "event_type")
    assert inter.columns == ["interaction_id", "user_id", "item_id", "event_ts", "event_date", "platform",
                             "event_type", "rating", "ctx_network", "ctx_battery", "_source_file",
                             "_ingested_at"]
    assert inter.schema["event_ts"] == pl.Datetime("us", "UTC") and inter.schema["event_date"] == pl.Date
    assert inter.schema["ctx_battery"] == pl.Float64 and inter.schema["rating"] == pl.Float64
    assert inter["event_type"].to_list() == ["take", "complete", "music_like", "take", "other", "take", "take"]
    assert inter["platform"].to_list()[:4] == ["phone", "phone", "phone", "speaker"]
    assert inter["ctx_battery"].to_list()[:3] == [80.5, 80.0, None]
    assert inter["ctx_network"][3] is None  # an empty categorical is null, not an error
    assert inter["event_ts"][0] == dt.datetime(2026, 9, 1, 8, tzinfo=dt.timezone.utc)
    assert inter["event_date"].to_list() == [D1] * 5 + [D2] * 2
    ids = inter["interaction_id"]
    assert ids.n_unique() == 7 and ids.str.contains(r"^[0-9a-f]{32}$").all()  # repeats get their own id
    assert inter["_source_file"][0] == str(src / "events" / "part-0.csv")
    assert inter["rating"].is_null().all()

    users = bronze(settings, USERS).sort("user_id")
    assert users.columns == ["user_id", "user_attr_country", "user_attr_age", "_source_file", "_ingested_at"]
    assert users.rows() == [("u1", "DE", 31.0, str(src / "users.jsonl"), users["_ingested_at"][0]),
                            ("u2", "FR", None, str(src / "users.jsonl"), users["_ingested_at"][0])]
    items = bronze(settings, ITEMS).sort("item_id")
    assert items.select("item_id", "item_attr_genre", "item_attr_duration_s").rows() == [
        ("t1", "jazz", 200.0), ("t2", "pop", 180.5), ("t9", "rock", 240.0)]

    assert report.days_written == [D1, D2]
    assert report.event_types == {"complete": 1, "music_like": 1, "other": 1, "take": 4}
    assert report.tables[INTERACTIONS].rows_read == 7 and report.tables[INTERACTIONS].rows_written == 7
    assert report.tables[USERS].rows_written == 2 and report.tables[ITEMS].rows_read == 3
    assert (report.users_missing, report.interactions_missing_user) == (1, 2)  # u3 has no users row
    assert (report.items_missing, report.interactions_missing_item) == (0, 0)
    assert report.versions == {INTERACTIONS: 1, USERS: 1, ITEMS: 1}
    assert len(report.source_files) == 3
    text = report.summary()
    assert "2 day(s) 2026-09-01 .. 2026-09-02" in text and "take=4" in text
    assert "1 user id(s) in the interactions are missing from the users table (2 interaction rows" in text
    assert json.loads(json.dumps(report.to_dict()))["days_written"] == ["2026-09-01", "2026-09-02"]
    assert report.metadata(INTERACTIONS) == {
        "dataset": "listening", "files": 1, "rows_read": 7, "rows_written": 7, "delta_version": 1,
        "days_written": 2, "first_day": "2026-09-01", "last_day": "2026-09-02",
        "event_types": {"complete": 1, "music_like": 1, "other": 1, "take": 4}, "rows_outside_days": 0}
    assert report.metadata(USERS)["user_ids_missing"] == 1
    assert report.metadata(USERS)["interaction_rows_without_user"] == 2


def test_a_multi_valued_attribute_lands_as_its_values_joined_by_the_unit_separator(settings, tmp_path):
    from lakehouse.mapped.mapping import MULTI_VALUE_SEPARATOR
    from ml.features import MULTI_VALUE_SEPARATOR as ML_SEPARATOR

    assert MULTI_VALUE_SEPARATOR == ML_SEPARATOR == "\x1f"  # ml splits what the import joined
    src = write_source(tmp_path / "src", tracks={
        "track_id": ["t1", "t2", "t9"], "genre": ["jazz | blues", "pop", " | "],
        "duration_s": [200.0, 180.5, 240.0]})
    mapping = event_mapping(src)
    mapping["items"]["multi_valued"] = {"genre": "|"}
    import_dataset(settings, parse_mapping(mapping, origin="m.yaml", base_dir=src), log=quiet)
    items = bronze(settings, ITEMS).sort("item_id")
    # values trimmed, empty ones dropped (none left: null); a single value stays itself
    assert items["item_attr_genre"].to_list() == ["jazz\x1fblues", "pop", None]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_jsonl_interactions_without_platform_or_events(settings, tmp_path, fmt):
    src = tmp_path / "src"
    (src / "log").mkdir(parents=True)
    rows = {"uid": ["a", "b", "a"], "iid": [1, 2, 2],
            "when": ["2026-09-01T10:00:00Z", "2026-09-01 23:30:00+02:00", "2026-09-03T01:02:03.5"]}
    if fmt == "parquet":
        pq.write_table(pa.table(rows), src / "log" / "x.parquet")
    else:
        (src / "log" / "x.jsonl").write_text(
            "".join(json.dumps(dict(zip(rows, vals))) + "\n" for vals in zip(*rows.values())))
    (src / "log" / "_SUCCESS").write_text("")  # marker files are not data
    m = parse_mapping({"name": "plain", "source": "src", "interactions": {
        "path": "log", "user": "uid", "item": "iid",
        "timestamp": {"column": "when", "unit": "iso", "timezone": "Europe/Paris"}}},
        origin="plain.yaml", base_dir=tmp_path)
    report = import_dataset(settings, m, log=quiet)
    inter = bronze(settings, INTERACTIONS).sort("event_ts")
    assert inter.columns == ["interaction_id", "user_id", "item_id", "event_ts", "event_date", "platform",
                             "event_type", "rating", "_source_file", "_ingested_at"]
    assert inter["event_ts"].to_list() == [
        dt.datetime(2026, 9, 1, 10, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 9, 1, 21, 30, tzinfo=dt.timezone.utc),  # the +02:00 offset wins over the zone
        dt.datetime(2026, 9, 2, 23, 2, 3, 500000, tzinfo=dt.timezone.utc)]  # naive: Paris time
    assert inter["item_id"].to_list() == ["1", "2", "2"]  # integer ids become text
    assert set(inter["platform"]) == {"all"} and set(inter["event_type"]) == {"take"}
    assert report.days_written == [D1, D2] and report.tables[INTERACTIONS].files == [
        str(src / "log" / f"x.{fmt}")]
    # no side tables: the ids seen, so dbt's sources exist
    assert bronze(settings, USERS).columns == ["user_id", "_source_file", "_ingested_at"]
    assert sorted(bronze(settings, USERS)["user_id"]) == ["a", "b"]
    assert sorted(bronze(settings, ITEMS)["item_id"]) == ["1", "2"]


def test_rating_threshold_and_strptime_timestamps(settings, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ratings.csv").write_text("user;movie;stars;rated_at\n"
                                     "u1;m1;5;01/09/2026 08:00\nu1;m2;3.5;01/09/2026 09:15\n"
                                     "u2;m1;4;02/09/2026 00:30\nu2;m3;1;02/09/2026 23:59\n")
    m = parse_mapping({"name": "movies", "source": str(src), "interactions": {
        "path": "ratings.csv", "delimiter": ";", "user": "user", "item": "movie",
        "timestamp": {"column": "rated_at", "unit": "%d/%m/%Y %H:%M", "timezone": "Europe/Berlin"},
        "rating": {"column": "stars", "positive_threshold": 4}}}, origin="movies.yaml")
    report = import_dataset(settings, m, log=quiet)
    inter = bronze(settings, INTERACTIONS).sort("event_ts")
    assert inter.select("user_id", "item_id", "rating", "event_type").rows() == [
        ("u1", "m1", 5.0, "take"), ("u1", "m2", 3.5, "below_threshold"),
        ("u2", "m1", 4.0, "take"), ("u2", "m3", 1.0, "below_threshold")]
    # Berlin is UTC+2 in September: 00:30 local on the 2nd is the 1st in UTC
    assert inter["event_ts"][2] == dt.datetime(2026, 9, 1, 22, 30, tzinfo=dt.timezone.utc)
    assert inter["event_date"].to_list() == [D1, D1, D1, D2]
    assert report.event_types == {"below_threshold": 2, "take": 2}


def test_reimport_is_idempotent_and_days_replace_only_those_days(settings, tmp_path):
    src = write_source(tmp_path / "src")
    m = mapping_of(src)
    import_dataset(settings, m, log=quiet)
    first = bronze(settings, INTERACTIONS).sort("interaction_id")
    import_dataset(settings, m, log=quiet)
    again = bronze(settings, INTERACTIONS).sort("interaction_id")
    assert again.drop("_ingested_at").equals(first.drop("_ingested_at"))  # same rows, same ids
    assert again.height == 7

    # the source changes on both days, but only day 2 is re-imported
    write_source(src, events=EVENTS[:2] + EVENTS[5:6] + [("u4", "t2", MS1 + 40 * HOUR, "play", "phone", "wifi", "9")])
    report = import_dataset(settings, m, days=[D2, dt.date(2026, 9, 9)], log=quiet)
    after = bronze(settings, INTERACTIONS)
    assert after.filter(pl.col("event_date") == D1).height == 5  # day 1 untouched
    assert sorted(after.filter(pl.col("event_date") == D2)["user_id"]) == ["u3", "u4"]
    assert report.days_written == [D2] and report.days_missing == [dt.date(2026, 9, 9)]
    assert report.rows_outside_days == 2 and report.event_types == {"take": 2}
    # the repeated play kept its id from the first import
    kept = set(first.filter(pl.col("event_date") == D2)["interaction_id"])
    assert len(kept & set(after["interaction_id"])) == 1
    assert "requested days without rows (left as they were): 2026-09-09" in report.summary()


def test_generated_listening_data_through_the_example_mapping(settings, tmp_path):
    data_dir = tmp_path / "data"
    cfg = ExternalConfig(days=5, users=60, items=50, files=2, seed=3)
    generate_external(data_dir / "listening_source", cfg)
    m = load_mapping(ROOT / "examples" / "listening" / "mapping.yaml", environ={"LAKEHOUSE_DATA_DIR": str(data_dir)})
    report = import_dataset(settings, m, log=quiet)
    events = pl.read_csv(data_dir / "listening_source" / "events" / "*.csv")
    inter = bronze(settings, INTERACTIONS)
    assert inter.height == events.height == report.tables[INTERACTIONS].rows_written
    assert len(report.tables[INTERACTIONS].files) == 2
    counts = dict(events.group_by("action").len().iter_rows())
    assert report.event_types == {"take": counts["play"], "complete": counts["full_listen"],
                                  "music_like": counts["like"], "other": counts["skip"]}
    assert set(inter["platform"]) <= {"phone", "desktop", "speaker"}
    assert set(inter["ctx_network"]) <= {"wifi", "cellular"}
    assert report.days_written == [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(5)]
    listed = {json.loads(line)["listener_id"] for line in (data_dir / "listening_source" / "users.jsonl").open()}
    assert report.users_missing == len(set(events["listener"]) - listed)
    assert bronze(settings, ITEMS).height == 50


def test_import_from_s3_to_s3(s3_env, s3_server, tmp_path):
    import boto3

    settings = LakehouseSettings.build(uri=s3_env, data_dir=str(tmp_path))
    bucket = s3_env[5:].split("/")[0]
    local = tmp_path / "gen"
    generate_external(local, ExternalConfig(days=3, users=30, items=40, files=2, seed=5))
    client = boto3.client("s3", endpoint_url=s3_server)
    for path in local.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"exports/{path.relative_to(local).as_posix()}")
    m = load_mapping(ROOT / "examples" / "listening" / "mapping.yaml", environ={"LAKEHOUSE_DATA_DIR": str(tmp_path)})
    m = _s3_mapping(m, f"s3://{bucket}/exports")
    report = import_dataset(settings, m, log=quiet)
    n_events = sum(pl.read_csv(p).height for p in (local / "events").glob("*.csv"))
    inter = bronze(settings, INTERACTIONS)
    assert inter.height == n_events == report.tables[INTERACTIONS].rows_written
    assert inter["_source_file"].str.starts_with(f"s3://{bucket}/exports/events/part-").all()
    assert report.tables[USERS].files == [f"s3://{bucket}/exports/users.jsonl"]
    assert bronze(settings, ITEMS).height == 40
    listing = client.list_objects_v2(Bucket=bucket, Prefix="lake/bronze/mapped_interactions/")
    keys = [o["Key"] for o in listing["Contents"]]
    assert any("_delta_log" in k for k in keys) and any(k.endswith(".parquet") for k in keys)

    # a missing prefix on S3 is named, and nothing changes
    before = versions(settings)
    with pytest.raises(SourceDataError,
                       match=f"no source files found for interactions at s3://{bucket}/nothing/events"):
        import_dataset(settings, _s3_mapping(m, f"s3://{bucket}/nothing"), log=quiet)
    assert versions(settings) == before


def _s3_mapping(m, source):
    """The example mapping re-pointed at another source."""
    d = m.to_dict()
    for k in ("mapping_path", "heads_present", "context_columns", "user_columns", "item_columns"):
        d.pop(k)
    d["source"] = source
    d["interactions"] = {k: v for k, v in d["interactions"].items() if v is not None}
    d["interactions"]["event"] = {k: v for k, v in d["interactions"]["event"].items() if v}
    for side in ("users", "items"):
        d[side] = {k: v for k, v in d[side].items() if v is not None}
    return parse_mapping(d, origin="s3-mapping")


# ---------------------------------------------------------------- bad inputs

def _rows_with(i, **values):
    cols = HEADER.split(",")
    rows = [list(r) for r in EVENTS]
    for k, v in values.items():
        rows[i][cols.index(k)] = v
    return rows


BAD = {
    "missing_column": dict(
        events_text=csv_text([r[:3] + r[4:] for r in EVENTS], "listener,track,ts,device,network,battery"),
        expect=["events/part-0.csv: column 'action' (interactions.event.column): is not in the file; its "
                "columns are: listener, track, ts, device, network, battery"]),
    "empty_user": dict(
        events=_rows_with(3, listener=""),
        expect=["column 'listener' (interactions.user): empty or null id",
                "row 4: listener=null, track='t2', ts='1788292800000', device='speaker'"]),
    "mixed_formats": dict(
        events=_rows_with(2, ts="2026-09-01T08:03:22Z"),
        expect=["column 'ts' (interactions.timestamp, unit 'ms'): mixed timestamp formats: some values are "
                "not epoch numbers", "row 3: listener='u1', track='t1', ts='2026-09-01T08:03:22Z'",
                "while row 1: listener='u1', track='t1', ts='1788249600000'"]),
    "unit_s_but_ms": dict(
        mapping=dict(timestamp={"column": "ts", "unit": "s"}),
        expect=["column 'ts' (interactions.timestamp, unit 's'): implausible epoch seconds: 1788249600000 "
                "would be the year 58637; is the unit ms?", "row 1: listener='u1'"]),
    "unit_ms_but_iso": dict(
        events=[(*r[:2], f"2026-09-01T0{i}:00:00Z", *r[3:]) for i, r in enumerate(EVENTS)],
        expect=["column 'ts' (interactions.timestamp, unit 'ms'): values are not epoch milliseconds: they "
                "look like ISO-8601 text, is the unit iso?", "[7 row(s)]", "row 1: listener='u1'"]),
    "not_the_format": dict(
        mapping=dict(timestamp={"column": "ts", "unit": "%d/%m/%Y %H:%M"}),
        events=[(*r[:2], "01/09/2026 08:00" if i != 4 else "2026-09-01 08:00", *r[3:]) for i, r in enumerate(EVENTS)],
        expect=["column 'ts' (interactions.timestamp, unit '%d/%m/%Y %H:%M'): mixed timestamp formats: some "
                "values do not match the format '%d/%m/%Y %H:%M'",
                "row 5: listener='u2', track='t2', ts='2026-09-01 08:00'",
                "(while row 1: listener='u1', track='t1', ts='01/09/2026 08:00'"]),
    "numeric_context": dict(
        events=_rows_with(5, battery="high"),
        expect=["column 'battery' (interactions.context.numeric): is declared numeric but holds a non-numeric "
                "value", "row 6: listener='u3', track='t1', ts='1788328800000', device='desktop', network='wifi', "
                "battery='high', action='play'"]),
    "rating_not_numeric": dict(
        mapping=dict(event=None, rating={"column": "action", "positive_threshold": 4}),
        expect=["column 'action' (interactions.rating.column): is declared numeric but holds a non-numeric "
                "value [7 row(s)]", "row 1: listener='u1'", "action='play'"]),
    "users_key_duplicated": dict(
        users=[{"listener_id": "u1", "country": "DE", "age": 1}, {"listener_id": "u2", "country": "FR", "age": 2},
               {"listener_id": "u1", "country": "IT", "age": 3}],
        expect=["users.jsonl: column 'listener_id' (users.key): key 'u1' appears 2 times",
                "row 1: listener_id='u1', country='DE', age=1 and row 3: listener_id='u1', country='IT', age=3"]),
    "items_key_null": dict(
        tracks={"track_id": ["t1", None], "genre": ["jazz", "pop"], "duration_s": [1.0, 2.0]},
        expect=["tracks.parquet: column 'track_id' (items.key): empty or null id",
                "row 2: track_id=null, genre='pop', duration_s=2.0"]),
}


@pytest.mark.parametrize("batches", ["whole files", "row by row"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_file_column_and_row_and_writes_nothing(settings, tmp_path, monkeypatch, case, batches):
    if batches == "row by row":  # the same message when every row is a batch of its own
        monkeypatch.setattr(sources, "BATCH_ROWS", 1)
        monkeypatch.setattr(sources, "BLOCK_BYTES", 64)
        monkeypatch.setattr(sources, "CSV_BLOCK_BYTES", 64)
        monkeypatch.setattr(staging, "STAGE_GROUP_ROWS", 1)
    spec = BAD[case]
    src = write_source(tmp_path / "src", events=spec.get("events", EVENTS), users=spec.get("users"),
                       tracks=spec.get("tracks"))
    if "events_text" in spec:
        (src / "events" / "part-0.csv").write_text(spec["events_text"])
    over = dict(spec.get("mapping", {}))
    d = event_mapping(src)
    for k, v in over.items():
        if v is None:
            d["interactions"].pop(k)
        else:
            d["interactions"][k] = v
    m = parse_mapping(d, origin=str(src / "mapping.yaml"))
    with pytest.raises(SourceDataError) as err:
        import_dataset(settings, m, log=quiet)
    text = str(err.value)
    assert "in the source data of mapping listening; nothing was written" in text
    assert "nothing was written" in text
    for piece in spec["expect"]:
        assert piece in text, text
    assert str(src) in text  # the file is named by its full path
    assert versions(settings) == {t: None for t in TABLES}  # no bronze table was created


def test_a_bad_second_file_leaves_the_previous_import_untouched(settings, tmp_path):
    src = write_source(tmp_path / "src")
    m = mapping_of(src)
    import_dataset(settings, m, log=quiet)
    before, rows = versions(settings), bronze(settings, INTERACTIONS).height
    (src / "events" / "part-1.csv").write_text(csv_text(_rows_with(1, track="")))
    with pytest.raises(SourceDataError) as err:
        import_dataset(settings, m, log=quiet)
    assert f"{src / 'events' / 'part-1.csv'}: column 'track' (interactions.item): empty or null id" in str(err.value)
    assert "part-0.csv" not in str(err.value)
    assert versions(settings) == before and bronze(settings, INTERACTIONS).height == rows


def test_unreadable_and_absent_sources_are_named(settings, tmp_path):
    src = write_source(tmp_path / "src")
    (src / "tracks.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceDataError, match=r"tracks.parquet: cannot be read as parquet"):
        import_dataset(settings, mapping_of(src), log=quiet)
    write_source(src)
    (src / "users.jsonl").write_text('{"listener_id": "u1"}\n{"listener_id": \n')
    with pytest.raises(SourceDataError, match=r"users.jsonl: cannot be read as jsonl \(line 2 is not valid JSON"):
        import_dataset(settings, mapping_of(src), log=quiet)
    m = mapping_of(src, path="exports/*.csv")
    with pytest.raises(SourceDataError, match=f"no source files found for interactions at {src}/exports/\\*.csv"):
        import_dataset(settings, m, log=quiet)
    assert versions(settings) == {t: None for t in TABLES}


def test_a_mapping_that_finds_no_positive_stops_and_shows_the_values(settings, tmp_path):
    src = write_source(tmp_path / "src")
    m = mapping_of(src, event={"column": "action", "take": ["Play"], "complete": ["full_listen"]})
    with pytest.raises(SourceDataError) as err:
        import_dataset(settings, m, log=quiet)
    assert ("none of interactions.event.take ['Play'] occurs in column 'action' of "
            f"{src / 'events' / 'part-0.csv'}; values found (rows): 'play' (4), 'full_listen' (1), "
            "'like' (1), 'skip' (1)") in str(err.value)
    m = mapping_of(src, event=None, rating={"column": "battery", "positive_threshold": 101},
                   context={"categorical": ["network"]})
    (src / "events" / "part-0.csv").write_text(csv_text(_rows_with(2, battery="1")))
    with pytest.raises(SourceDataError, match=r"no rating in column 'battery' reaches interactions.rating."
                                              r"positive_threshold 101 \(ratings range 1 .. 100\)"):
        import_dataset(settings, m, log=quiet)
    # NaN is no epoch
    pq.write_table(pa.table({"listener": ["u1", "u2"], "track": ["t1", "t2"], "ts": [1788249600.0, float("nan")],
                             "action": ["play", "play"], "device": ["phone"] * 2, "network": ["wifi"] * 2,
                             "battery": [1.0, 2.0]}), src / "events" / "part-0.parquet")
    (src / "events" / "part-0.csv").unlink()
    m = mapping_of(src, format="parquet", timestamp={"column": "ts", "unit": "s"})
    with pytest.raises(SourceDataError, match=r"part-0.parquet: column 'ts' \(interactions.timestamp, unit 's'\): "
                                              r"value could not be read as a timestamp; e.g. row 2: listener='u2'"):
        import_dataset(settings, m, log=quiet)
    assert versions(settings) == {t: None for t in TABLES}
    # event values of a head that never occur are worth a warning, not a failure
    write_source(src)
    (src / "events" / "part-0.parquet").unlink()
    logs = []
    import_dataset(settings, mapping_of(src, event={"column": "action", "take": ["play"], "music_like": ["heart"]}),
                   log=logs.append)
    assert "[import] warning: interactions.event.music_like values ['heart'] never occur in column 'action'" in logs
