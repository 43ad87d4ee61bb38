"""ml.gold (GoldStore) and ml.examples on a tiny Delta lakehouse built in tmp_path: point in time,
cold start, sampling, lineage."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from ml.features import CLASS_PREFIX, Encoders, default_spec
from ml.examples import collect_days, iter_batches, read_examples
from ml.gold import GoldStore, user_kept
from tests.ml.tiny_gold import E1, E2, E3, USERS, build_lakehouse

@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_lakehouse(tmp_path_factory.mktemp("gold"))


def test_point_in_time_join_uses_previous_day_only(lake):
    df = read_examples(GoldStore(lake)).collect()
    assert df.height == 39 * 2 + 40 * 3 + 40 * 3  # E1: u2 not signed up, c3 not released
    # u1 is user n=0; day index k of feature_date: E1-1 -> 0, E1 -> 1, E2 -> 2, E3 -> 3
    u1 = df.filter(pl.col("user_id") == "u1").select("event_date", "workouts_total").unique()
    got = dict(zip(u1["event_date"].to_list(), u1["workouts_total"].to_list()))
    assert got == {E1: 0, E2: 100, E3: 200}  # never 100*(k of event_date) = the same-day row
    c1 = df.filter(pl.col("class_id") == "c1").select("event_date", CLASS_PREFIX + "workouts_total").unique()
    assert dict(zip(c1["event_date"].to_list(), c1[CLASS_PREFIX + "workouts_total"].to_list())) == {
        E1: 0, E2: 100, E3: 200}


def test_cold_start_user_and_new_class_are_left_joined(lake):
    df = read_examples(GoldStore(lake), start=E2, end=E2).collect()
    assert set(df["event_date"].unique().to_list()) == {E2}
    u2 = df.filter(pl.col("user_id") == "u2")
    assert u2.height == 3  # kept, not dropped by an inner join
    assert u2["workouts_total"].null_count() == 3 and u2["fitness_level"].null_count() == 3
    c3 = df.filter(pl.col("class_id") == "c3")
    assert c3.height == 40
    assert c3[CLASS_PREFIX + "workouts_total"].null_count() == 40  # no row for E2 - 1
    # static metadata from bronze, so the new class still has it
    assert set(c3["discipline"].to_list()) == {"running"} and set(c3["instructor_id"].to_list()) == {"i1"}
    assert c3["release_date"].to_list()[0] == E2
    # latest landing of a re-sent class wins
    assert set(df.filter(pl.col("class_id") == "c1")["music_genre"].to_list()) == {"rock"}

    # the encoders turn those nulls into usable features: counts 0, flags set, finite
    enc = Encoders.fit(df, default_spec())
    b = enc.transform(u2)
    assert torch.isfinite(b.dense).all()
    cold = enc.spec.dense.index("user_is_cold")
    new = enc.spec.dense.index("class_is_new")
    raw_cold = b.dense[:, cold] * enc.std["user_is_cold"] + enc.mean["user_is_cold"]
    assert torch.allclose(raw_cold, torch.ones(3))
    bc3 = enc.transform(c3)
    raw_new = bc3.dense[:, new] * enc.std["class_is_new"] + enc.mean["class_is_new"]
    assert torch.allclose(raw_new, torch.ones(40))


def test_downsampling_is_deterministic_and_user_level(lake):
    a = read_examples(GoldStore(lake), sample_fraction=0.5, seed=7).collect()
    b = read_examples(GoldStore(lake), sample_fraction=0.5, seed=7).collect()
    assert a.sort("example_id").equals(b.sort("example_id"))
    kept = set(a["user_id"].to_list())
    assert 0 < len(kept) < len(USERS)
    assert kept == {u for u in USERS if user_kept(u, 0.5, 7)}
    full = read_examples(GoldStore(lake)).collect()
    # all examples of a kept user are kept
    assert a.height == full.filter(pl.col("user_id").is_in(list(kept))).height
    # the decision for a user does not depend on the date range
    one_day = read_examples(GoldStore(lake), start=E3, end=E3, sample_fraction=0.5, seed=7).collect()
    assert set(one_day["user_id"].to_list()) == kept
    other = read_examples(GoldStore(lake), sample_fraction=0.5, seed=8).collect()
    assert set(other["user_id"].to_list()) != kept


def test_iter_batches_covers_every_row_once(lake):
    lf = read_examples(GoldStore(lake))
    full = lf.collect()
    enc = Encoders.fit(full, default_spec())
    n_dense, n_sparse = len(enc.spec.dense), len(enc.spec.sparse)
    for seed in (None, 3):
        batches = list(iter_batches(lf, enc, 64, shuffle_seed=seed))
        assert sum(len(b) for b in batches) == full.height
        assert all(len(b) == 64 for b in batches[:-1]) and 0 < len(batches[-1]) <= 64
        for b in batches:
            assert b.dense.dtype == torch.float32 and b.dense.shape[1] == n_dense
            assert b.sparse.dtype == torch.int64 and b.sparse.shape[1] == n_sparse
            assert b.labels.dtype == torch.float32 and b.labels.shape[1] == 3
        # each example exactly once: the multiset of rows equals the one-shot transform
        got = torch.cat([torch.cat([b.dense, b.sparse.float(), b.labels], 1) for b in batches])
        ref = enc.transform(full)
        want = torch.cat([ref.dense, ref.sparse.float(), ref.labels], 1)
        assert got.shape == want.shape
        assert torch.equal(_sorted_rows(got), _sorted_rows(want))
        assert int(got[:, -3].sum()) == full["label_take"].sum()


def _sorted_rows(t: torch.Tensor) -> torch.Tensor:
    rows = sorted(map(tuple, t.tolist()))
    return torch.tensor(rows)


def test_collect_days_reads_those_days_joined_point_in_time(lake):
    lf = read_examples(GoldStore(lake))
    keys = ["event_date", "user_id", "class_id"]
    whole = lf.collect().sort(keys)
    for days in ([E2], [E1, E3]):
        got = collect_days(lf, days).sort(keys)
        assert got.equals(whole.filter(pl.col("event_date").is_in(days)))
        assert set(got["event_date"].to_list()) == set(days)
    # a day without examples: no rows, the frame's columns
    empty = collect_days(lf, [E3 + (E3 - E2) * 10])
    assert empty.height == 0 and empty.columns == whole.columns


def test_iter_batches_accepts_a_dataframe_and_multi_day_chunks(lake):
    full = read_examples(GoldStore(lake)).collect()
    enc = Encoders.fit(full, default_spec())
    batches = list(iter_batches(full, enc, 1000, days_per_chunk=2, drop_last=False))
    assert [len(b) for b in batches] == [full.height]


def test_missing_or_empty_tables_are_named(lake, tmp_path):
    with pytest.raises(FileNotFoundError, match="gold/training_examples"):
        read_examples(GoldStore(str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="gold/nope"):
        GoldStore(lake).versions(["nope"])
    empty = tmp_path / "empty"
    build = build_lakehouse(empty)
    schema = pl.scan_delta(f"{build}/gold/training_examples").collect_schema()
    pl.DataFrame(schema=schema).write_delta(f"{build}/gold/training_examples", mode="overwrite")
    with pytest.raises(ValueError, match="empty: .*gold/training_examples"):
        read_examples(GoldStore(build))


def test_table_versions(lake):
    v = GoldStore(lake).versions()
    assert v == {"training_examples": 0, "user_features_daily": 0, "class_features_daily": 0}


def test_lineage_takes_and_optional_tables(lake, candidates_lake):
    """The lineage a training run records: the gold tables it needs, and the optional ones
    (scoring_candidates, user_instructor_affinity) where they exist."""
    assert GoldStore(lake).lineage() == GoldStore(lake).versions()
    assert GoldStore(lake).affinity() is None
    full = GoldStore(candidates_lake)
    assert set(full.lineage()) == {"training_examples", "user_features_daily", "class_features_daily",
                                   "scoring_candidates", "user_instructor_affinity"}
    assert full.affinity().collect().height == 3 * 20 * 2
    # a take is a positive training example: c1, by every user on every day they have a row
    takes = full.takes(E2, E3).collect()
    assert set(takes["class_id"]) == {"c1"} and takes.height == 40 + 40
    assert takes.columns == ["event_date", "user_id", "class_id", "platform"]
    assert full.event_dates() == [E1, E2, E3]


def test_a_relative_lakehouse_path_still_reads_from_another_directory(lake, tmp_path, monkeypatch):
    # Ray workers run in their own working directory: the store must name the same tables there
    import os

    monkeypatch.chdir(os.path.dirname(str(lake)))
    store = GoldStore(os.path.basename(str(lake)))
    monkeypatch.chdir(tmp_path)
    assert store.uri == str(lake)
    assert read_examples(store).collect().height == 39 * 2 + 40 * 3 + 40 * 3
    assert GoldStore("s3://bucket/lake").uri == "s3://bucket/lake"  # a URI is kept as given
