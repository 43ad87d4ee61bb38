"""The landing files the simulator writes load into the lakehouse contract exactly."""

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lakehouse.contract import BY_NAME, ENTITIES
from simulator.export import SCHEMAS

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
EVENTS = ("workouts", "music_likes", "bookmarks", "impressions")


def load(path: Path, entity) -> pa.Table:
    """Read one landing file into the contract schema (jsonl: parsed line by line)."""
    if path.suffix == ".parquet":
        t = pq.read_table(path)
        assert t.schema.names == entity.schema.names
        for c in entity.columns:
            assert t.schema.field(c.name).type == c.type, (path, c.name)
        return t
    assert path.suffix == ".jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ts_cols = [c.name for c in entity.columns if pa.types.is_timestamp(c.type)]
    for r in rows:
        assert list(r) == entity.schema.names, path
        for c in ts_cols:
            assert ISO_Z.match(r[c]), r[c]
            r[c] = datetime.fromisoformat(r[c].replace("Z", "+00:00"))
    return pa.Table.from_pylist(rows, schema=entity.schema)


@pytest.fixture(scope="module")
def landed(tiny_landing, tiny_cfg) -> dict:
    out = {}
    root = Path(tiny_landing)
    dates = [tiny_cfg.start_date + timedelta(days=d) for d in range(tiny_cfg.days)]
    for e in ENTITIES:
        folders = sorted(p.name for p in (root / e.name).iterdir())
        assert folders == [f"date={d.isoformat()}" for d in dates], e.name
        for d in dates:
            files = [p for p in (root / e.name / f"date={d.isoformat()}").iterdir()]
            assert [p.name for p in files] == [f"part-0000.{'jsonl' if e.name in EVENTS[1:] else 'parquet'}"]
            out[(e.name, d)] = load(files[0], e)
    return out


def test_simulator_schemas_equal_contract():
    for e in ENTITIES:
        assert SCHEMAS[e.name].names == e.schema.names
        assert SCHEMAS[e.name].types == e.schema.types


def test_values_respect_contract(landed, tiny_cfg):
    for (name, d), t in landed.items():
        e = BY_NAME[name]
        t.cast(e.schema)
        for c in e.columns:
            col = t[c.name]
            if not c.nullable:
                assert col.null_count == 0, (name, c.name)
            if c.accepted and len(col):
                assert set(col.drop_null().to_pylist()) <= set(c.accepted), (name, c.name)
            if c.min is not None and len(col.drop_null()):
                assert pc.min(col).as_py() >= c.min and pc.max(col).as_py() <= c.max, (name, c.name)
        if e.event_time and len(t):
            day_start = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
            ts = t[e.event_time]
            assert pc.max(ts).as_py() < day_start + timedelta(days=1), (name, d)
            # events and later days' new entities fall on the landing day; day 0 holds the backfill
            if name in EVENTS or d > tiny_cfg.start_date:
                assert pc.min(ts).as_py() >= day_start, (name, d)


def test_keys_unique_and_references_resolve(landed):
    full = {name: pa.concat_tables([t for (n, _), t in sorted(landed.items()) if n == name]) for name in BY_NAME}
    for e in ENTITIES:
        t = full[e.name]
        keys = t.select(list(e.key)).to_pylist()
        assert len({tuple(k.values()) for k in keys}) == len(keys), e.name
        for col, ref in e.references.items():
            ref_key = BY_NAME[ref].key[0]
            assert set(t[col].to_pylist()) <= set(full[ref][ref_key].to_pylist()), (e.name, col)
    assert full["workouts"].num_rows > 1000
    assert full["impressions"].num_rows > full["workouts"].num_rows
    assert full["music_likes"].num_rows > 0 and full["bookmarks"].num_rows > 0


def test_output_only_on_connected_hardware(landed):
    w = pa.concat_tables([t for (n, _), t in landed.items() if n == "workouts"])
    app = pc.equal(w["platform"], "app")
    assert w.filter(app)["output_kj"].null_count == w.filter(app).num_rows
    bike = w.filter(pc.equal(w["platform"], "bike"))
    assert bike["output_kj"].null_count < 0.5 * bike.num_rows


def test_home_screen_sometimes_shows_the_class_taken(landed):
    w = pa.concat_tables([t for (n, _), t in landed.items() if n == "workouts"]).to_pylist()
    imp = pa.concat_tables([t for (n, _), t in landed.items() if n == "impressions"]).to_pylist()
    shown = {(r["user_id"], r["shown_ts"].date(), r["class_id"]) for r in imp}
    visits = {(r["user_id"], r["shown_ts"].date()) for r in imp}
    taken = [(r["user_id"], r["start_ts"].date(), r["class_id"]) for r in w if (r["user_id"], r["start_ts"].date()) in visits]
    share = sum(k in shown for k in taken) / len(taken)
    assert 0.05 < share < 0.6
    assert {r["position"] for r in imp} == set(range(1, 7))
