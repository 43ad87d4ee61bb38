"""The collaborative feature (`ml.cooccurrence`): point in time, held against a count from
scratch; carried by the encoders; the same on a frame and on pairs."""

from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import polars as pl
import pytest

import ml.cooccurrence as cooc
from ml.cooccurrence import COOCCURRENCE, CooccurrenceError, Neighbours
from ml.datasets import MAPPED
from ml.examples import read_examples, with_cooccurrence
from ml.features import RECENT_ITEMS, Encoders
from ml.gold import GoldStore
from ml.pairs import PairEncoder
from tests.ml.tiny_mapped_gold import DAYS, build_mapped_lakehouse

D0 = dt.date(2024, 1, 1)


def reference(takes: list[tuple], day: dt.date, c: str | None, recent: list[str | None],
              k: int) -> float:
    """The feature from scratch: the users' item sets from the takes before `day`, then the
    shrunk cosine of c to each recent item at float16 precision, cut to c's k largest (ties
    kept), averaged."""
    seen: dict[str, set] = {}
    for d, u, i in takes:
        if d < day:
            seen.setdefault(u, set()).add(i)
    items = sorted({i for _, _, i in takes} | {c} | {r for r in recent if r} - {None})
    takers = {i: sum(i in s for s in seen.values()) for i in items}

    def sim(a, b):
        if a == b:
            return 0.0
        both = sum(a in s and b in s for s in seen.values())
        return both / (math.sqrt(takers[a] * takers[b]) + cooc.SHRINK)

    row = {j: float(np.float16(sim(c, j))) for j in items} if c is not None else {}
    if len(items) > k and row:
        cut = sorted(row.values(), reverse=True)[k - 1]
        row = {j: v if v >= cut else 0.0 for j, v in row.items()}
    vals = [row.get(r, 0.0) for r in recent if r is not None]
    return float(np.mean(vals)) if vals else float("nan")


def random_log(seed: int, n_users: int = 9, n_items: int = 14, n_days: int = 6) -> list[tuple]:
    rng = random.Random(seed)
    return sorted({(D0 + dt.timedelta(days=rng.randrange(n_days)), f"u{rng.randrange(n_users)}",
                    f"i{rng.randrange(n_items):02d}") for _ in range(70)})


def point_in_time(takes: list[tuple], queries: list[tuple], n_recent: int):
    """`cooc.point_in_time` on (day, user, item) takes and (day, class, recent...) queries."""
    items = sorted({t[2] for t in takes} | {v for q in queries for v in q[1:] if v is not None})
    code = {v: i for i, v in enumerate(items)}
    users = {u: i for i, u in enumerate(sorted({t[1] for t in takes}))}
    return cooc.point_in_time(
        items, [t[0].toordinal() for t in takes], [users[t[1]] for t in takes],
        [code[t[2]] for t in takes], [q[0].toordinal() for q in queries],
        [code.get(q[1], -1) for q in queries],
        np.array([[code.get(r, -1) for r in q[2:2 + n_recent]] for q in queries],
                 dtype=np.int64).reshape(len(queries), n_recent))


@pytest.mark.parametrize("k", [3, 32])
def test_point_in_time_matches_a_count_from_scratch(monkeypatch, k):
    monkeypatch.setattr(cooc, "NEIGHBOURS", k)
    takes = random_log(seed=k)
    rng = random.Random(1)
    items = sorted({i for _, _, i in takes}) + ["new"]
    queries = [(D0 + dt.timedelta(days=rng.randrange(7)), rng.choice(items),
                *[rng.choice(items + [None]) for _ in range(3)]) for _ in range(60)]
    queries.append((D0 + dt.timedelta(days=3), "i01", None, None, None))  # no recent item
    got, neighbours = point_in_time(takes, queries, 3)
    want = [reference(takes, q[0], q[1], list(q[2:]), k) for q in queries]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert np.isnan(got[-1]) and (got[:-1][~np.isnan(got[:-1])] > 0).any()
    # the neighbours after every take score as a query of the day after the last take
    later = max(t[0] for t in takes) + dt.timedelta(days=1)
    for q in queries[:20]:
        assert neighbours.score([q[1]], [[r] for r in q[2:]])[0] == pytest.approx(
            reference(takes, later, q[1], list(q[2:]), k), rel=1e-5, abs=1e-7, nan_ok=True)
    # ... and survive the encoders' JSON
    assert Neighbours.from_dict(neighbours.to_dict()) == neighbours


def test_too_many_items_is_an_error_naming_the_way_out(monkeypatch):
    monkeypatch.setattr(cooc, "MAX_ITEMS", 5)  # the dense counts' bound
    with pytest.raises(CooccurrenceError, match=r"14 items.*drop_features.*recent_item_cooccurrence"):
        point_in_time(random_log(seed=3), [], 3)


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    return build_mapped_lakehouse(tmp_path_factory.mktemp("cooc"), "rich")


START, END = DAYS[0], DAYS[4]  # the training window of the mapped test lakehouse


@pytest.fixture(scope="module")
def training(rich):
    """The training window's examples with the feature, and the neighbours after it."""
    gold = GoldStore(rich[0])
    lf, neighbours = with_cooccurrence(
        read_examples(gold, start=START, end=END, dataset=MAPPED), gold, START, END, RECENT_ITEMS)
    return lf.collect(), neighbours


def test_training_frame_carries_it_point_in_time(rich, training):
    uri, log = rich
    end = END
    frame, neighbours = training
    takes = [(t["event_date"], t["user"], t["item"]) for t in log.takes if t["event_date"] <= end]
    assert frame.height == pl.read_delta(f"{uri}/gold/training_examples").filter(
        pl.col("event_date") <= end).height
    recent = frame.select(RECENT_ITEMS).rows()
    want = [reference(takes, d, c, list(r), cooc.NEIGHBOURS)
            for d, c, r in zip(frame["event_date"], frame["class_id"], recent)]
    got = frame[COOCCURRENCE].fill_null(float("nan")).to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert (got[frame["event_date"].to_numpy() > np.datetime64(DAYS[1])] > 0).any()
    # a day's examples never see that day's takes: on the first day there is nothing before
    assert np.nan_to_num(got[frame["event_date"].to_numpy() == np.datetime64(DAYS[0])]).max() == 0.0
    # the model carries the neighbours after the last training day
    later = end + dt.timedelta(days=1)
    q = frame.filter(pl.col("last_item_id").is_not_null()).head(5)
    for c, r in zip(q["class_id"], q.select(RECENT_ITEMS).rows()):
        assert neighbours.score([c], [[x] for x in r])[0] == pytest.approx(
            reference(takes, later, c, list(r), cooc.NEIGHBOURS), rel=1e-5, abs=1e-7)


def test_scoring_takes_it_from_the_encoders_the_same_on_frames_and_pairs(rich, training):
    gold = GoldStore(rich[0])
    train, neighbours = training
    enc = Encoders.fit(train, gold.mapped_spec())
    enc.neighbours = neighbours
    enc = Encoders.from_json(enc.to_json())
    assert enc.neighbours == neighbours
    j = enc.spec.dense.index(COOCCURRENCE)
    # a later day's frame has no such column: the encoders compute it from the neighbours
    held = read_examples(gold, start=DAYS[5], end=DAYS[5], dataset=MAPPED).collect()
    assert COOCCURRENCE not in held.columns
    want = neighbours.score(held["class_id"].to_list(), [held[c].to_list() for c in RECENT_ITEMS])
    want = (np.nan_to_num(want, nan=0.0) - enc.mean[COOCCURRENCE]) / enc.std[COOCCURRENCE]
    np.testing.assert_allclose(enc.transform(held).dense[:, j].numpy(), want, rtol=1e-5, atol=1e-6)
    # pairs: users x classes without the cross-join frame give the same values
    users = held.select("user_id", *RECENT_ITEMS).unique(maintain_order=True).head(6)
    classes = held.select("class_id").unique(maintain_order=True).head(7)
    pe = PairEncoder(enc)
    dense, _ = pe.pairs(pe.encode_users(users), np.arange(users.height), pe.encode_classes(classes))
    explicit = users.join(classes, how="cross")
    expected = neighbours.score(explicit["class_id"].to_list(), [explicit[c].to_list() for c in RECENT_ITEMS])
    expected = (np.nan_to_num(expected, nan=0.0) - enc.mean[COOCCURRENCE]) / enc.std[COOCCURRENCE]
    np.testing.assert_allclose(dense[:, j].numpy(), expected, rtol=1e-5, atol=1e-6)
