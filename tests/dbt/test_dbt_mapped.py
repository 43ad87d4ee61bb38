"""The dbt models of the "mapped" dataset (issue 6) end to end on small fake bronze tables.

Writes bronze mapped_interactions / mapped_users / mapped_items as the import asset does
(contract: event_date partitions, ctx_* / user_attr_* / item_attr_* columns), runs
`dbt build --vars '{dataset: mapped}'` in a subprocess (cwd=dbt_project, everything it writes
kept under tmp_path) and checks the gold-contract marts against numbers computed here in Python
from the same rows, never from the marts:

- `rich`: two platforms, context columns, users/items side tables, a re-ingested interaction;
  built over five days, then a one-day partition run once the sixth day lands;
- `bare`: ratings, one implicit platform "all", no context column, key-only side tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import subprocess
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from tests.dbt.dbt_cli import PROJECT_DIR, dbt_executable

deltalake = pytest.importorskip("deltalake")

DAYS = [dt.date(2025, 6, 4) + dt.timedelta(days=i) for i in range(6)]  # Wed .. Mon
LAST_DAY = DAYS[-1]
K = 4  # negatives_per_positive (the project default)
W = 5  # smoothing_weight
COMPLETE_PRIOR, LIKE_PRIOR = 0.5, 0.1  # mapped_complete_prior, mapped_music_like_prior
TS = pa.timestamp("us", tz="UTC")
INGESTED = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)


def _genre(k: int) -> str:
    """The items table's genre of the k-th item (sorted ids); the first holds two values, as the
    import writes a multi-valued attribute (joined by the unit separator)."""
    return "rock\x1fblues" if k == 0 else ("rock", "jazz", "pop")[k % 3]


def _ts(day: dt.date, hour: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.timezone.utc) + dt.timedelta(hours=hour)


def _iid(*parts) -> str:
    return hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()[:16]


def make_rich(seed: int = 5) -> list[dict]:
    """Takes with follow-up complete / music_like events (some before the take, some the next day),
    "other" events that make items available, a user seen only through an "other" event."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []

    def add(user, item, ts, platform, event_type, network, battery):
        rows.append(dict(interaction_id=_iid(user, item, ts, event_type, len(rows)), user_id=user, item_id=item,
                         event_ts=ts, platform=platform, event_type=event_type,
                         ctx_network=network, ctx_battery=battery))

    for day_i, day in enumerate(DAYS):
        items = [f"i{j:02d}" for j in range(8 + 3 * day_i)]  # the catalogue grows every day
        for user in rng.choice([f"u{k:02d}" for k in range(12)], size=8, replace=False):
            hour = float(rng.uniform(5, 12))
            for _ in range(int(rng.integers(1, 4))):
                ts = _ts(day, hour)
                item = str(rng.choice(items))
                platform = str(rng.choice(["web", "mobile"]))
                network = str(rng.choice(["wifi", "cell"]))
                battery = None if rng.random() < 0.2 else round(float(rng.uniform(5, 100)), 1)
                add(str(user), item, ts, platform, "take", network, battery)
                r = rng.random()
                if r < 0.45:
                    add(str(user), item, ts + dt.timedelta(minutes=3), platform, "complete", None, None)
                elif r < 0.55:  # before the take: not its completion
                    add(str(user), item, ts - dt.timedelta(minutes=10), platform, "complete", None, None)
                elif r < 0.65:  # the next day: not its completion either
                    add(str(user), item, ts + dt.timedelta(days=1), platform, "complete", None, None)
                if rng.random() < 0.3:
                    add(str(user), item, ts + dt.timedelta(minutes=5), platform, "music_like", network, None)
                if rng.random() < 0.2:  # browsing: makes an item available without a take
                    add(str(user), str(rng.choice(items)), ts - dt.timedelta(minutes=1), platform, "other",
                        network, None)
                hour += float(rng.uniform(0.3, 3))
    # seen only through a non-take event on day two
    add("u_browse", "i00", _ts(DAYS[1], 9), "web", "other", "wifi", 50.0)
    for r in rows:
        r["event_date"] = r["event_ts"].date()
    return [r for r in rows if r["event_date"] in DAYS]


def make_bare() -> list[dict]:
    """A ratings log: no platform (implicit "all"), no context column."""
    rows = []
    for n, (user, item, day_i, hour, stars) in enumerate([
        ("a", "x1", 0, 8, 5.0), ("b", "x2", 0, 9, 2.0), ("a", "x2", 1, 8, 4.0), ("b", "x3", 1, 10, 5.0),
        ("c", "x1", 2, 7, 4.5), ("a", "x3", 2, 20, 1.0), ("c", "x4", 2, 21, 4.0),
    ]):
        ts = _ts(DAYS[day_i], hour)
        rows.append(dict(interaction_id=_iid(user, item, ts, n), user_id=user, item_id=item, event_ts=ts,
                         event_date=ts.date(), platform="all",
                         event_type="take" if stars >= 4 else "below_threshold", rating=stars))
    return rows


def write_interactions(root: Path, rows: list[dict], days: list[dt.date], mode: str,
                       ingested: dt.datetime = INGESTED) -> None:
    from deltalake import write_deltalake

    picked = [r for r in rows if r["event_date"] in days]
    types = dict(event_ts=TS, event_date=pa.date32(), ctx_battery=pa.float64(), ctx_network=pa.string(),
                 rating=pa.float64())
    columns = {name: pa.array([r[name] for r in picked], types.get(name, pa.string())) for name in picked[0]}
    columns["_source_file"] = pa.array(["events.csv"] * len(picked))
    columns["_ingested_at"] = pa.array([ingested] * len(picked), TS)
    write_deltalake(f"{root}/bronze/mapped_interactions", pa.table(columns), partition_by=["event_date"], mode=mode)


def write_side(root: Path, name: str, table: pa.Table) -> None:
    from deltalake import write_deltalake

    write_deltalake(f"{root}/bronze/{name}", table, mode="overwrite", schema_mode="overwrite")


def start_dbt(work: Path, warehouse: Path, lakehouse: Path, *extra_vars: str) -> subprocess.Popen:
    """`dbt build` of the mapped dataset in the background (each warehouse its own target/logs)."""
    env = {
        **os.environ,
        "LAKEHOUSE_URI": str(lakehouse),
        "LAKEHOUSE_DUCKDB_PATH": str(warehouse),
        "DUCKDB_EXTENSION_DIRECTORY": str(work / "duckdb_extensions"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_TARGET": "local",
    }
    variables = ", ".join(['"dataset": "mapped"', *extra_vars])
    cmd = [dbt_executable(), "build", "--vars", f"{{{variables}}}",
           "--target-path", str(work / f"target_{warehouse.stem}"), "--log-path", str(work / f"logs_{warehouse.stem}")]
    return subprocess.Popen(cmd, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{out[-6000:]}\n{err[-3000:]}"


def _query(path: Path, sql: str) -> list[dict]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        con.close()


def _columns(path: Path, table: str) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [d[0] for d in con.execute(f"select * from {table} limit 0").description]
    finally:
        con.close()


MARTS = {
    "mapped_training_examples": ("event_date", ["example_id"]),
    "mapped_user_features_daily": ("feature_date", ["user_id"]),
    "mapped_class_features_daily": ("feature_date", ["class_id"]),
    "mapped_scoring_candidates": ("feature_date", ["platform", "class_id"]),
    "mapped_user_attribute_affinity": ("feature_date", ["user_id", "attribute", "value"]),
}


def _snapshot(path: Path) -> dict[str, list[dict]]:
    out = {}
    for model, (date_column, keys) in MARTS.items():
        out[model] = _query(path, f"select * from {model} order by {date_column}, {', '.join(keys)}")
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`rich`: full build of days 1-5, then a one-day partition run once day six lands (the
    marts before that run are kept); `bare`: one full build."""
    work = tmp_path_factory.mktemp("dbt_mapped")
    rows = make_rich()
    # the same interaction ingested again later with a corrected context: the latest wins
    first_take = next(r for r in rows if r["event_type"] == "take" and r["event_date"] == DAYS[0])
    stale = {**first_take, "ctx_network": "stale"}
    lake = work / "rich"
    write_interactions(lake, [stale], [DAYS[0]], mode="overwrite", ingested=INGESTED - dt.timedelta(days=1))
    write_interactions(lake, rows, DAYS[:-1], mode="append")
    users = sorted({r["user_id"] for r in rows})
    write_side(lake, "mapped_users", pa.table({
        "user_id": users, "user_attr_country": [("DE", "FR")[i % 2] for i in range(len(users))],
        "user_attr_age": pa.array([20.0 + i for i in range(len(users))], pa.float64()),
        "_source_file": ["users.jsonl"] * len(users), "_ingested_at": pa.array([INGESTED] * len(users), TS)}))
    items = sorted({r["item_id"] for r in rows})
    write_side(lake, "mapped_items", pa.table({
        "item_id": items, "item_attr_genre": [_genre(i) for i in range(len(items))],
        "_source_file": ["items.parquet"] * len(items), "_ingested_at": pa.array([INGESTED] * len(items), TS)}))
    # the bare dataset builds beside the rich one (dbt is mostly single-threaded parsing)
    bare_rows = make_bare()
    bare_lake = work / "bare"
    write_interactions(bare_lake, bare_rows, DAYS, mode="overwrite")
    # no users/items table in the mapping: the import writes the key column alone
    write_side(bare_lake, "mapped_users", pa.table({"user_id": sorted({r["user_id"] for r in bare_rows})}))
    write_side(bare_lake, "mapped_items", pa.table({"item_id": sorted({r["item_id"] for r in bare_rows})}))
    bare = work / "bare.duckdb"
    bare_build = start_dbt(work, bare, bare_lake)

    rich = work / "rich.duckdb"
    try:
        finish(start_dbt(work, rich, lake))
        before = _snapshot(rich)
        write_interactions(lake, rows, [LAST_DAY], mode="append")
        day = LAST_DAY.isoformat()
        finish(start_dbt(work, rich, lake, f'"start_date": "{day}"', f'"end_date": "{day}"'))
    except BaseException:
        bare_build.kill()
        raise
    finish(bare_build)
    manifest = json.loads((work / "target_rich" / "manifest.json").read_text())
    return dict(rich=rich, rows=rows, before=before, bare=bare, bare_rows=bare_rows, manifest=manifest)


# ------------------------------------------------------------------ references, from the rows


def labels_of(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """interaction_id of each take -> (label_complete, label_music_like)."""
    out = {}
    for t in rows:
        if t["event_type"] != "take":
            continue
        def follows(kind):
            return int(any(e["event_type"] == kind and e["user_id"] == t["user_id"] and e["item_id"] == t["item_id"]
                           and e["event_date"] == t["event_date"] and e["event_ts"] >= t["event_ts"] for e in rows))
        out[t["interaction_id"]] = (follows("complete"), follows("music_like"))
    return out


def expected_negatives(interaction_id: str, candidates: list[str]) -> list[str]:
    """The fitness mart's sampling (stratified, MD5 of the take's id), recomputed: candidates in
    first-seen order, the ring rotated by one 24-bit slice of the MD5, one slice per stratum."""
    m = len(candidates)
    digest = hashlib.md5(interaction_id.encode()).hexdigest()
    stratum = max(m // K, 1)
    offsets = [(int(digest[0:6], 16) % m + (k - 1) * stratum + int(digest[6 * k:6 * k + 6], 16) % stratum) % m
               for k in range(1, min(K, m) + 1)]
    return [candidates[o] for o in offsets]


def first_seen(rows: list[dict]) -> dict[tuple[str, str], dt.datetime]:
    """(platform, item) -> first interaction there."""
    out: dict[tuple[str, str], dt.datetime] = {}
    for r in rows:
        key = (r["platform"], r["item_id"])
        out[key] = min(out.get(key, r["event_ts"]), r["event_ts"])
    return out


# ------------------------------------------------------------------ rich dataset


def test_switch_enables_only_mapped_nodes(built):
    """--vars '{dataset: mapped}' enables models/mapped and the mapped sources, nothing of fitness
    (the manifest's enabled nodes are what `dbt ls` lists and what Dagster turns into assets)."""
    m = built["manifest"]
    enabled = {n["name"] for part in ("nodes", "sources", "unit_tests") for n in m[part].values()}
    assert {"mapped_training_examples", "mapped_user_features_daily", "mapped_class_features_daily",
            "mapped_scoring_candidates", "mapped_interactions", "mapped_users", "mapped_items",
            "mapped_user_features_are_point_in_time"} <= enabled
    assert [n for n in enabled if "mapped" not in n] == []
    published = {n["name"]: n["config"]["meta"]["publish"] for n in m["nodes"].values()
                 if (n["config"].get("meta") or {}).get("publish")}
    assert published == {
        "mapped_training_examples": {"layer": "gold", "name": "training_examples", "partition_by": "event_date"},
        "mapped_user_features_daily": {"layer": "gold", "name": "user_features_daily", "partition_by": "feature_date"},
        "mapped_class_features_daily": {"layer": "gold", "name": "class_features_daily",
                                        "partition_by": "feature_date"},
        "mapped_scoring_candidates": {"layer": "gold", "name": "scoring_candidates", "partition_by": "feature_date"},
        "mapped_user_attribute_affinity": {"layer": "gold", "name": "user_attribute_affinity",
                                           "partition_by": "feature_date"},
    }


def test_training_examples_labels_and_negatives(built):
    rows = built["rows"]
    examples = _query(built["rich"], "select * from mapped_training_examples")
    takes = {r["interaction_id"]: r for r in rows if r["event_type"] == "take"}
    labels = labels_of(rows)
    seen = first_seen(rows)
    by_take: dict[str, list[dict]] = {}
    for e in examples:
        by_take.setdefault(e["workout_id"], []).append(e)
    assert set(by_take) == set(takes), "one positive per take, every take"
    # the data exercises both values of both labels
    assert {c for c, _ in labels.values()} == {0, 1} and {m for _, m in labels.values()} == {0, 1}
    n_short = 0
    for iid, es in by_take.items():
        t = takes[iid]
        pos = [e for e in es if not e["is_negative"]]
        neg = [e for e in es if e["is_negative"]]
        assert len(pos) == 1 and pos[0]["class_id"] == t["item_id"] and pos[0]["sample_index"] == 0
        assert (pos[0]["label_take"], pos[0]["label_complete"], pos[0]["label_music_like"]) == (1, *labels[iid])
        # candidates: available on the platform strictly before the take, in first-seen order
        pool = sorted((ts, i) for (p, i), ts in seen.items()
                      if p == t["platform"] and ts < t["event_ts"] and i != t["item_id"])
        candidates = [i for _, i in pool]
        assert len(neg) == min(K, len(pool)), f"{iid}: {len(neg)} negatives from a pool of {len(pool)}"
        n_short += len(pool) < K
        assert {e["class_id"] for e in neg} <= set(candidates), f"{iid}: a negative not available before the take"
        assert len({e["class_id"] for e in neg}) == len(neg) and t["item_id"] not in {e["class_id"] for e in neg}
        # deterministic: exactly the draw of the formula
        assert [e["class_id"] for e in sorted(neg, key=lambda e: e["sample_index"])] == \
            expected_negatives(iid, candidates)
        assert sorted(e["sample_index"] for e in es) == list(range(len(es)))
        for e in es:
            assert e["example_id"] == f"{iid}:{e['sample_index']}"
            assert (e["event_date"], e["feature_date"]) == (t["event_date"], t["event_date"] - dt.timedelta(days=1))
            # negatives share the positive's context
            assert (e["user_id"], e["platform"], e["ctx_network"], e["ctx_battery"]) == \
                (t["user_id"], t["platform"], t["ctx_network"], t["ctx_battery"])
            assert (e["hour_of_day"], e["day_of_week"], e["is_weekend"]) == \
                (t["event_ts"].hour, t["event_ts"].isoweekday(), t["event_ts"].isoweekday() >= 6)
            if e["is_negative"]:
                assert (e["label_take"], e["label_complete"], e["label_music_like"]) == (0, 0, 0)
    assert n_short, "the first takes have fewer than K candidates"
    # the re-ingested interaction keeps its latest version
    assert not [e for e in examples if e["ctx_network"] == "stale"]


def test_user_features_point_in_time(built):
    rows = built["rows"]
    items = sorted({r["item_id"] for r in rows})  # the fixture's items table, in this order
    feats = _query(built["rich"], "select * from mapped_user_features_daily")
    labels = labels_of(rows)
    takes = sorted((r for r in rows if r["event_type"] == "take"), key=lambda r: (r["event_ts"], r["interaction_id"]))
    first = {}
    for r in rows:
        first[r["user_id"]] = min(first.get(r["user_id"], r["event_date"]), r["event_date"])
    assert {(f["user_id"], f["feature_date"]) for f in feats} == \
        {(u, d) for u, s in first.items() for d in DAYS if d >= s}
    for f in feats:
        u, d = f["user_id"], f["feature_date"]
        mine = [t for t in takes if t["user_id"] == u and t["event_date"] <= d]
        last28 = [t for t in mine if t["event_date"] > d - dt.timedelta(days=28)]
        likes = [r for r in rows if r["user_id"] == u and r["event_type"] == "music_like"
                 and d - dt.timedelta(days=28) < r["event_date"] <= d]
        hours = Counter(t["event_ts"].hour for t in mine)
        want = dict(
            first_seen_date=first[u], days_since_first_seen=(d - first[u]).days,
            events_total=len(mine), events_7d=sum(t["event_date"] > d - dt.timedelta(days=7) for t in mine),
            events_28d=len(last28),
            days_since_last_event=(d - mine[-1]["event_date"]).days if mine else None,
            last_platform=mine[-1]["platform"] if mine else None,
            last_ctx_network=mine[-1]["ctx_network"] if mine else None,
            last_ctx_battery=mine[-1]["ctx_battery"] if mine else None,
            # the recent state: the last three takes of the latest day with one, latest first
            **{name: (day_takes[-k]["item_id"] if len(day_takes) >= k else None)
               for day_takes in [[t for t in mine if t["event_date"] == mine[-1]["event_date"]] if mine else []]
               for k, name in ((1, "last_item_id"), (2, "last_item_id_2"), (3, "last_item_id_3"))},
            usual_hour=min(h for h, c in hours.items() if c == max(hours.values())) if mine else None,
            music_likes_28d=len(likes),
        )
        # ... and the last item's attributes (the items table's genre, by the item's rank)
        want["last_item_attr_genre"] = (None if want["last_item_id"] is None else
                                        _genre(items.index(want["last_item_id"])))
        got = {k: f[k] for k in want}
        assert got == want, f"{u} {d}"
        completed = sum(labels[t["interaction_id"]][0] for t in last28)
        assert math.isclose(f["complete_rate_28d"], (completed + W * COMPLETE_PRIOR) / (len(last28) + W))
    browse = [f for f in feats if f["user_id"] == "u_browse"]
    assert browse and all(f["events_total"] == 0 and f["usual_hour"] is None for f in browse)
    assert {f["user_attr_country"] for f in feats} == {"DE", "FR"} and all(f["user_attr_age"] for f in feats)


def test_user_attribute_affinity_point_in_time(built):
    """Per (feature_date, user, genre): the user's takes up to the end of the date (all inside the
    365-day window) with an item of that genre (each genre of a multi-valued item), and their
    share of all the user's takes."""
    rows = built["rows"]
    items = sorted({r["item_id"] for r in rows})
    genres = {i: _genre(k).split("\x1f") for k, i in enumerate(items)}
    takes = [r for r in rows if r["event_type"] == "take"]
    want = {}
    for d in DAYS:
        for u in sorted({t["user_id"] for t in takes}):
            mine = [t for t in takes if t["user_id"] == u and t["event_date"] <= d]
            for g, n in Counter(g for t in mine for g in genres[t["item_id"]]).items():
                want[(d, u, "item_attr_genre", g)] = (n, n / len(mine))
    got = {(r["feature_date"], r["user_id"], r["attribute"], r["value"]): (r["takes"], r["share"])
           for r in _query(built["rich"], "select * from mapped_user_attribute_affinity")}
    assert got.keys() == want.keys() and any(key[3] == "blues" for key in got)
    for key, (n, share) in want.items():
        assert got[key][0] == n and math.isclose(got[key][1], share), key
    # no categorical item attribute (bare): the table exists, empty
    assert _query(built["bare"], "select * from mapped_user_attribute_affinity") == []


def test_class_features_and_candidates(built):
    rows = built["rows"]
    labels = labels_of(rows)
    feats = _query(built["rich"], "select * from mapped_class_features_daily")
    release = {}
    for r in rows:
        release[r["item_id"]] = min(release.get(r["item_id"], r["event_date"]), r["event_date"])
    assert {(f["class_id"], f["feature_date"]) for f in feats} == \
        {(i, d) for i, s in release.items() for d in DAYS if d >= s}
    for f in feats:
        i, d = f["class_id"], f["feature_date"]
        mine = [r for r in rows if r["event_type"] == "take" and r["item_id"] == i and r["event_date"] <= d]
        assert (f["release_date"], f["age_days"]) == (release[i], (d - release[i]).days)
        assert (f["events_1d"], f["events_7d"], f["events_total"]) == (
            sum(r["event_date"] == d for r in mine), sum(r["event_date"] > d - dt.timedelta(days=7) for r in mine),
            len(mine))
        likes = sum(labels[r["interaction_id"]][1] for r in mine)
        assert math.isclose(f["music_like_rate"], (likes + W * LIKE_PRIOR) / (len(mine) + W))
        assert f["item_attr_genre"] in ("rock", "jazz", "pop", "rock\x1fblues")
    candidates = _query(built["rich"], "select * from mapped_scoring_candidates")
    expected = {(d, d + dt.timedelta(days=1), p, i) for (p, i), ts in first_seen(rows).items()
                for d in DAYS if ts.date() <= d}
    assert {tuple(c.values()) for c in candidates} == expected and len(candidates) == len(expected)


def test_one_day_run_replaces_only_its_day(built):
    """Days 1-5 were built before day six landed; the day-six partition run must leave them as
    they were and add day six (checked against the references above for every day)."""
    after = _snapshot(built["rich"])
    for model, (date_column, _) in MARTS.items():
        old = [r for r in after[model] if r[date_column] != LAST_DAY]
        assert old == built["before"][model], f"{model}: the one-day run changed earlier days"
        assert not [r for r in built["before"][model] if r[date_column] == LAST_DAY]
        assert [r for r in after[model] if r[date_column] == LAST_DAY], f"{model}: no rows for {LAST_DAY}"


def test_side_and_context_columns(built):
    cols = {m: _columns(built["rich"], m) for m in MARTS}
    assert cols["mapped_training_examples"] == [
        "example_id", "workout_id", "sample_index", "event_date", "feature_date", "user_id", "class_id",
        "platform", "hour_of_day", "day_of_week", "is_weekend", "ctx_network", "ctx_battery",
        "label_take", "label_complete", "label_music_like", "is_negative"]
    assert cols["mapped_user_features_daily"] == [
        "user_id", "feature_date", "first_seen_date", "days_since_first_seen", "events_total", "events_7d",
        "events_28d", "days_since_last_event", "last_platform", "usual_hour", "complete_rate_28d",
        "music_likes_28d", "last_item_id", "last_item_id_2", "last_item_id_3", "last_ctx_network",
        "last_ctx_battery", "user_attr_country", "user_attr_age", "last_item_attr_genre"]
    assert cols["mapped_class_features_daily"] == [
        "class_id", "feature_date", "release_date", "age_days", "events_1d", "events_7d", "events_28d",
        "events_total", "complete_rate", "music_like_rate", "item_attr_genre"]
    assert cols["mapped_scoring_candidates"] == ["feature_date", "serve_date", "platform", "class_id"]
    assert "rating" not in sum(cols.values(), [])


# ------------------------------------------------------------------ bare dataset


def test_bare_dataset_builds_without_context(built):
    bare = built["bare"]
    cols = _columns(bare, "mapped_training_examples")
    assert not [c for c in cols if c.startswith("ctx_")] and "rating" not in cols
    # no context, no user or item attributes: the recent items only
    assert _columns(bare, "mapped_user_features_daily")[-8:] == [
        "days_since_last_event", "last_platform", "usual_hour", "complete_rate_28d", "music_likes_28d",
        "last_item_id", "last_item_id_2", "last_item_id_3"]
    assert not [c for c in _columns(bare, "mapped_class_features_daily") if c.startswith("item_attr_")]
    examples = _query(bare, "select * from mapped_training_examples where not is_negative order by workout_id")
    takes = {r["interaction_id"]: r for r in built["bare_rows"] if r["event_type"] == "take"}
    assert {e["workout_id"] for e in examples} == set(takes)  # ratings below the threshold are no take
    assert {e["platform"] for e in examples} == {"all"}
    # c takes x1 on day three: x1, x2, x3 were seen before (x4 only later that day)
    neg = _query(bare, "select class_id from mapped_training_examples where is_negative and workout_id = "
                       f"'{next(i for i, t in takes.items() if t['user_id'] == 'c' and t['item_id'] == 'x1')}'")
    assert sorted(r["class_id"] for r in neg) == ["x2", "x3"]
    users = {(f["user_id"], f["feature_date"]): f for f in _query(bare, "select * from mapped_user_features_daily")}
    # b's only take (x3, 10:00) is on day two; its day-one interaction was below the threshold
    assert users[("b", DAYS[0])]["events_total"] == 0 and users[("b", DAYS[0])]["last_platform"] is None
    assert (users[("b", DAYS[1])]["events_total"], users[("b", DAYS[1])]["usual_hour"]) == (1, 10)
    assert (users[("a", DAYS[2])]["events_total"], users[("a", DAYS[2])]["usual_hour"]) == (2, 8)
    candidates = _query(bare, "select platform, class_id from mapped_scoring_candidates "
                              f"where feature_date = '{DAYS[1]}' order by class_id")
    assert [(c["platform"], c["class_id"]) for c in candidates] == [("all", "x1"), ("all", "x2"), ("all", "x3")]
