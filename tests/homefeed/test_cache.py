"""The versioned cache: round trip, versions and pruning, rollback, refusals, and that readers
never see a mix of two versions while a publish runs."""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from pathlib import Path

import orjson
import polars as pl
import pytest

from homefeed import cache as cache_mod
from homefeed.cache import CURRENT, CacheError, CacheReader, CacheStore, read_pointer
from tests.homefeed.data import SERVE_DATE, expected_rows, f32, payload_rows

PAYLOAD_KEYS = ["user_id", "platform", "serve_date", "model_version", "cache_version", "source", "rows"]


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in (root / "versions").glob(".*")] + [p.name for p in root.glob("CURRENT.tmp")]


def test_round_trip_rows_items_and_popular(tmp_path, make_frames, publish, popular):
    frames = make_frames(40, model_version=3)
    store = CacheStore(tmp_path)
    v = publish(store, frames, model_version=3)
    assert (tmp_path / CURRENT).read_text().strip() == v.name == store.current().name
    assert (v.keys, v.rows, v.model_version, v.serve_date) == (80, sum(f.height for f in frames), 3, SERVE_DATE)
    assert set(v.row_ids) == {"for_you", "morning", "evening", "recover"}
    assert _leftovers(tmp_path) == []

    reader = CacheReader(tmp_path)
    expected = expected_rows(frames)
    assert len(expected) == 80
    for (user_id, platform), rows in expected.items():
        payload = orjson.loads(reader.get(user_id, platform))
        assert list(payload) == PAYLOAD_KEYS
        assert (payload["user_id"], payload["platform"], payload["source"]) == (user_id, platform, "personal")
        assert (payload["serve_date"], payload["model_version"], payload["cache_version"]) == (
            "2026-10-31", 3, v.name)
        # screen order (for_you, morning, evening, recover: not alphabetical), items by rank
        assert payload_rows(payload) == rows
        assert [r["row_id"] for r in payload["rows"]] == ["for_you", "morning", "evening", "recover"]

    # unknown user and a platform nobody has personal rows on: the popular list
    assert reader.get("u9999999", "bike") is None
    assert reader.get("u0000001", "tread") is None
    hit = reader.lookup("u9999999", "tread")
    assert hit is not None and not hit.personal and hit.version.name == v.name
    pop = orjson.loads(hit.body)
    assert (pop["user_id"], pop["source"], pop["cache_version"]) == (None, "popular", v.name)
    want = popular.filter(pl.col("platform") == "tread").sort("rank")
    assert pop["rows"][0]["row_id"] == "popular" and pop["rows"][0]["title"] == "Popular on Tread"
    assert [(i["rank"], i["class_id"], f32(i["score"])) for i in pop["rows"][0]["items"]] == [
        (r, c, f32(s)) for r, c, s in want.select("rank", "class_id", "score").iter_rows()]
    assert reader.popular("tread") == hit.body
    reader.close()


def test_scores_are_short_and_exact(tmp_path, make_frames, publish):
    v = publish(CacheStore(tmp_path), make_frames(3))
    body = CacheReader(tmp_path).get("u0000000", "bike")
    scores = [i["score"] for r in orjson.loads(body)["rows"] for i in r["items"]]
    # float32 printed as its shortest decimal: at most 9 significant digits, never 0.12300000339...
    assert all(len(repr(s).replace("0.", "", 1).lstrip("0")) <= 9 for s in scores), scores
    assert v.keys == 6


def test_publish_keeps_newest_and_prunes(tmp_path, make_frames, publish):
    store = CacheStore(tmp_path, keep=2)
    made = [publish(store, make_frames(10, seed=s, model_version=s), model_version=s) for s in (1, 2, 3)]
    names = [v.name for v in store.versions()]
    assert names == [made[2].name, made[1].name]
    assert not made[0].path.exists()
    assert store.current().name == made[2].name
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == sorted(
        f"{n}.sqlite" for n in names)
    assert all(n.startswith("v") and len(n) == len("v20261031T030512Z-abcdef") for n in names)
    assert names == sorted(names, reverse=True)  # names sort by creation, even within one second


def test_rollback(tmp_path, make_frames, publish):
    store = CacheStore(tmp_path)
    a = publish(store, make_frames(10, seed=1), model_version=1)
    b = publish(store, make_frames(10, seed=2, model_version=2), model_version=2)
    reader = CacheReader(tmp_path, refresh_s=0)
    assert orjson.loads(reader.get("u0000001", "app"))["cache_version"] == b.name

    assert store.rollback().name == a.name
    assert read_pointer(tmp_path) == a.name
    assert orjson.loads(reader.get("u0000001", "app"))["model_version"] == 1
    with pytest.raises(CacheError, match=rf"no version before .*{a.name}"):
        store.rollback()
    with pytest.raises(CacheError, match=rf"unknown version 'v-nope'.*{b.name}.*{a.name}"):
        store.rollback("v-nope")
    assert store.rollback(b.name).name == b.name
    assert orjson.loads(reader.get("u0000001", "app"))["model_version"] == 2
    # a publish after a rollback still becomes current and keeps the newest versions
    c = publish(store, make_frames(10, seed=3, model_version=3), model_version=3)
    assert [v.name for v in store.versions()] == [c.name, b.name, a.name]


def _null_class_id(frames):
    f = frames[0].with_row_index("i")
    return [f.with_columns(pl.when(pl.col("i") == 3).then(None).otherwise(pl.col("class_id"))
                           .alias("class_id")).drop("i"), *frames[1:]]


@pytest.mark.parametrize("mutate, message", [
    (lambda fs: [f.drop("class_id") for f in fs], r"missing column.*class_id"),
    (_null_class_id, r"frame 0: column 'class_id' is null at row 3 \(user_id='u\d+'"),
    (lambda fs: [f.with_columns(pl.col("rank").cast(pl.String)) for f in fs], r"'rank' has type String"),
    (lambda fs: [fs[0].with_columns(pl.when(pl.col("rank") == 2).then(0).otherwise(pl.col("rank"))
                                    .alias("rank"))], r"'rank' must be a positive integer at row \d+"),
    (lambda fs: [fs[0].with_columns(pl.lit("x box").alias("platform"))], r"'platform' must match"),
    # a platform the popular lists do not cover: its unknown users would get nothing
    (lambda fs: [f.with_columns(pl.col("platform").replace("bike", "xbox")) for f in fs], r"no rows for platform\(s\) \['xbox'\]"),
    (lambda fs: [fs[0].with_columns(pl.lit(7, pl.Int32).alias("model_version"))], r"model_version.*differs"),
    (lambda fs: [fs[0], fs[0]], r"already came in an earlier frame"),  # a group split across frames
    (lambda fs: [f.head(0) for f in fs], r"refusing to publish an empty cache"),
    (lambda fs: [], r"refusing to publish an empty cache"),
])
def test_invalid_input_leaves_previous_version_serving(tmp_path, make_frames, publish, mutate, message):
    store = CacheStore(tmp_path)
    a = publish(store, make_frames(10, seed=1))
    before = sorted(p.name for p in (tmp_path / "versions").iterdir())
    with pytest.raises(CacheError, match=message):
        publish(store, mutate(make_frames(30, seed=2, model_version=2)), model_version=2)
    assert read_pointer(tmp_path) == a.name
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == before
    assert _leftovers(tmp_path) == []
    assert orjson.loads(CacheReader(tmp_path).get("u0000001", "bike"))["cache_version"] == a.name


def test_popular_must_cover_every_platform(tmp_path, make_frames, popular):
    store = CacheStore(tmp_path)
    with pytest.raises(CacheError, match=r"popular: no rows for platform\(s\) \['tread'\]"):
        store.publish(make_frames(5), popular.filter(pl.col("platform") != "tread"),
                      serve_date=SERVE_DATE, model_version=1)
    assert store.current() is None and _leftovers(tmp_path) == []


def test_iterator_failing_midway_leaves_current_and_no_temp(tmp_path, make_frames, publish, popular):
    store = CacheStore(tmp_path)
    a = publish(store, make_frames(10))
    frames = make_frames(30, seed=2, model_version=2)

    def broken():
        yield frames[0]
        yield frames[1]
        raise RuntimeError("lakehouse read failed")

    with pytest.raises(RuntimeError, match="lakehouse read failed"):
        store.publish(broken(), popular, serve_date=SERVE_DATE, model_version=2)
    assert read_pointer(tmp_path) == a.name
    assert [v.name for v in store.versions()] == [a.name]
    assert _leftovers(tmp_path) == []


def test_reader_before_and_after_first_publish(tmp_path, make_frames, publish):
    reader = CacheReader(tmp_path / "cache", refresh_s=0)
    assert reader.version is None and reader.get("u0000001", "bike") is None
    assert reader.lookup("u0000001", "bike") is None
    with pytest.raises(CacheError, match="no published cache"):
        reader.popular("bike")
    v = publish(CacheStore(tmp_path / "cache"), make_frames(5))
    assert reader.version.name == v.name
    assert reader.get("u0000001", "bike") is not None


def test_reader_refresh_interval(tmp_path, make_frames, publish):
    store = CacheStore(tmp_path)
    a = publish(store, make_frames(5))
    reader = CacheReader(tmp_path, refresh_s=30)
    assert reader.version.name == a.name
    b = publish(store, make_frames(5, seed=2, model_version=2), model_version=2)
    assert reader.version.name == a.name  # not re-checked within refresh_s
    reader._next_check = 0.0  # the interval has passed
    assert reader.version.name == b.name


def test_get_racing_a_swap_is_answered_by_the_new_version(tmp_path, make_frames, publish, monkeypatch):
    store = CacheStore(tmp_path)
    publish(store, make_frames(5))
    reader = CacheReader(tmp_path, refresh_s=0)
    old = reader._snapshot()
    b = publish(store, make_frames(5, seed=2, model_version=2), model_version=2)
    real = reader._snapshot
    assert real().version.name == b.name and old.closed  # the swap closed the old handle
    # a get() that picked the old snapshot just before the swap must not use the closed handle
    stale = iter([old])
    monkeypatch.setattr(reader, "_snapshot", lambda: next(stale, None) or real())
    assert orjson.loads(reader.get("u0000001", "bike"))["cache_version"] == b.name


def test_cli_status_and_rollback(tmp_path, make_frames, publish, capsys):
    store = CacheStore(tmp_path)
    a = publish(store, make_frames(5))
    b = publish(store, make_frames(5, seed=2, model_version=2), model_version=2)
    assert cache_mod.main(["status", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"| * | {b.name} |" in out and f"|  | {a.name} |" in out
    assert cache_mod.main(["rollback", "--cache", str(tmp_path)]) == 0
    assert read_pointer(tmp_path) == a.name
    assert cache_mod.main(["rollback", "--cache", str(tmp_path), "--to", "v-missing"]) == 1
    assert "unknown version 'v-missing'" in capsys.readouterr().err


# -- the mix test ------------------------------------------------------------------------------
MIX_USERS = 150  # keys hammered: present in both versions


def hammer(reader: str | CacheReader, expected: dict, started, stop_after_b: int, deadline_s: float,
           out=None, seed: int = 0) -> dict:
    """get() random keys until version B (model_version 2) was seen `stop_after_b` times; check
    that each payload is whole: one cache_version per model_version, items of that version."""
    if isinstance(reader, str):  # in a child process: its own reader
        reader = CacheReader(reader, refresh_s=0)
    keys = sorted(expected[1])
    rnd = random.Random(seed)
    seen = {1: set(), 2: set()}
    counts = {1: 0, 2: 0}
    errors = []
    end = time.monotonic() + deadline_s
    while counts[2] < stop_after_b and time.monotonic() < end:
        key = rnd.choice(keys)
        try:
            body = reader.get(*key)
        except Exception as e:  # e.g. a handle closed under us by another thread's swap
            errors.append(f"{key}: {e!r}")
            continue
        if body is None:
            errors.append(f"{key}: no payload")
            continue
        p = orjson.loads(body)
        mv = p["model_version"]
        counts[mv] = counts.get(mv, 0) + 1
        seen.setdefault(mv, set()).add(p["cache_version"])
        if (p["user_id"], p["platform"]) != key or payload_rows(p) != expected.get(mv, {}).get(key):
            errors.append(f"{key}: payload of model_version {mv} does not match that version's data")
        if counts[1] + counts[2] == 50:
            started.set()
    started.set()
    result = {"counts": counts, "seen": {k: sorted(v) for k, v in seen.items()}, "errors": errors[:5]}
    if out is not None:
        out.put(result)
    return result


def test_readers_never_see_a_mix_during_publish(tmp_path, make_frames, publish):
    store = CacheStore(tmp_path, keep=1)  # keep=1: A's file is deleted while readers hold it open
    frames_a = make_frames(MIX_USERS, seed=1, model_version=1, k=10, chunk_users=50)
    # B is larger, so its publish takes a while; the hammered keys are in both versions
    frames_b = make_frames(4_000, seed=2, model_version=2, k=10, chunk_users=1_000)
    a = publish(store, frames_a, model_version=1)
    exp_a, exp_b = expected_rows(frames_a), expected_rows(frames_b[:1])
    expected = {1: exp_a, 2: {k: v for k, v in exp_b.items() if k in exp_a}}
    assert len(expected[2]) == len(expected[1]) == 2 * MIX_USERS

    ctx = mp.get_context("spawn")
    proc_started, queue = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=hammer, args=(str(tmp_path), expected, proc_started, 300, 25.0, queue))
    proc.start()
    # three threads share one reader (refresh_s=0: every get() re-checks CURRENT)
    shared = CacheReader(tmp_path, refresh_s=0)
    outs: list[dict] = [{} for _ in range(3)]
    events = [threading.Event() for _ in outs]
    threads = [threading.Thread(target=lambda i=i: outs[i].update(
        hammer(shared, expected, events[i], 2_000, 25.0, seed=i))) for i in range(len(outs))]
    for t in threads:
        t.start()
    try:
        assert all(e.wait(10) for e in events) and proc_started.wait(20), "readers did not start"
        b = publish(store, frames_b, model_version=2)
        for t in threads:
            t.join(30)
        proc_out = queue.get(timeout=30)
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.terminate()
    assert not (tmp_path / "versions" / f"{a.name}.sqlite").exists()
    results = [(f"thread {i}", o) for i, o in enumerate(outs)] + [("process", proc_out)]
    for who, res in results:
        assert res["errors"] == [], (who, res)
        assert res["seen"] == {1: [a.name], 2: [b.name]}, (who, res)
        assert res["counts"][1] > 0 and res["counts"][2] > 0, (who, res)
