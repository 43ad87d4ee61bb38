"""ml.prefetch and the prefetched training batches: the same batches in the same order, errors
reach the consumer, an early stop ends the thread, the queue stays within its bound; the chunk
cache across epochs: the same batches, without reading the data again."""

from __future__ import annotations

import shutil
import threading
import time

import polars as pl
import pytest
import torch

from ml.examples import ChunkCache, iter_batches, read_examples
from ml.features import Encoders, FeatureError, default_spec
from ml.gold import GoldStore
from ml.prefetch import prefetch
from tests.ml.tiny_gold import build_lakehouse


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_lakehouse(tmp_path_factory.mktemp("gold"))


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_prefetched_batches_equal_the_plain_ones_batch_for_batch(lake):
    lf = read_examples(GoldStore(lake))
    enc = Encoders.fit(lf.collect(), default_spec())
    for seed in (None, 5):
        plain = list(iter_batches(lf, enc, 32, shuffle_seed=seed))
        ahead = list(iter_batches(lf, enc, 32, shuffle_seed=seed, prefetch=2))
        assert len(plain) == len(ahead) > 3
        for a, b in zip(plain, ahead):
            assert torch.equal(a.dense, b.dense) and torch.equal(a.sparse, b.sparse)
            assert torch.equal(a.labels, b.labels)
    # a shuffle does reorder (the equality above is not trivially of one fixed order)
    one, other = list(iter_batches(lf, enc, 32, shuffle_seed=1)), list(iter_batches(lf, enc, 32, shuffle_seed=2))
    assert not torch.equal(one[0].sparse, other[0].sparse)


def test_cached_epochs_equal_the_plain_ones_and_read_nothing(lake):
    lf = read_examples(GoldStore(lake))
    enc = Encoders.fit(lf.collect(), default_spec())
    cache = ChunkCache(1 << 30)
    for seed in (3, 4, None):  # epochs: the first fills the cache, the others read from it
        plain = list(iter_batches(lf, enc, 32, shuffle_seed=seed))
        cached = list(iter_batches(lf, enc, 32, shuffle_seed=seed, cache=cache, prefetch=seed or 0))
        assert len(plain) == len(cached) > 3
        for a, b in zip(plain, cached):
            assert torch.equal(a.dense, b.dense) and torch.equal(a.sparse, b.sparse)
            assert torch.equal(a.labels, b.labels)
    assert cache.bytes > 0
    # from the cache, nothing is read: a frame that cannot be collected is never touched
    broken = lf.with_columns(pl.col("user_id").cast(pl.Int64, strict=True))
    from_cache = list(iter_batches(broken, enc, 32, shuffle_seed=3, cache=cache))
    assert sum(len(b) for b in from_cache) == sum(len(b) for b in plain)
    with pytest.raises(pl.exceptions.PolarsError):
        list(iter_batches(broken, enc, 32, shuffle_seed=3))
    # a budget too small keeps nothing and changes nothing
    small = ChunkCache(1)
    list(iter_batches(lf, enc, 32, shuffle_seed=3, cache=small))
    assert small.bytes == 0


def test_a_bad_column_raises_the_same_feature_error_through_the_prefetch(lake, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(lake, bad)
    uf = pl.read_delta(f"{lake}/gold/user_features_daily")
    enc = Encoders.fit(read_examples(GoldStore(lake)).collect(), default_spec())
    uf.with_columns(pl.lit(float("inf")).alias("minutes_7d")).write_delta(
        str(bad / "gold" / "user_features_daily"), mode="overwrite")
    lf = read_examples(GoldStore(str(bad)))
    with pytest.raises(FeatureError, match="dense column 'minutes_7d' holds NaN or infinite") as plain:
        list(iter_batches(lf, enc, 32))
    with pytest.raises(FeatureError, match="dense column 'minutes_7d' holds NaN or infinite") as ahead:
        list(iter_batches(lf, enc, 32, prefetch=2))
    assert str(plain.value) == str(ahead.value)
    assert not _threads("batches")


def test_closing_early_stops_the_producer_thread():
    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    it = prefetch(endless(), 2, name="endless-test")
    assert next(it) == 0 and next(it) == 1
    assert _threads("endless-test")
    it.close()
    assert not _threads("endless-test")
    n = len(made)
    time.sleep(0.1)
    assert len(made) == n  # nothing produced after the close


def test_the_producer_holds_at_most_its_bound():
    made = []
    released = threading.Event()

    def counted():
        for i in range(100):
            made.append(i)
            yield i
        released.set()

    it = prefetch(counted(), 3, name="bound-test")
    assert next(it) == 0
    time.sleep(0.3)  # the producer fills the queue and blocks
    # taken 1, queued <= 3, one more built and waiting to be queued
    assert 1 + 3 <= len(made) <= 1 + 3 + 1
    assert list(it) == list(range(1, 100)) and released.is_set()
    assert not _threads("bound-test")


def test_the_producer_error_keeps_its_type_and_traceback():
    def failing():
        yield 1
        raise KeyError("column 'x' of row 7")

    it = prefetch(failing(), 2)
    assert next(it) == 1
    with pytest.raises(KeyError, match="row 7") as info:
        next(it)
    assert any(f.name == "failing" for f in info.traceback)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        prefetch([1], 0)


def test_training_with_prefetched_batches_gives_the_same_model(lake):
    from ml.train import TrainConfig
    from ml.training_job import ModelHParams, TrainingJob, fit_encoders, plan_window, run_training

    def job(prefetch: int) -> TrainingJob:
        return TrainingJob(data=plan_window(GoldStore(lake), train_days=2, valid_days=1),
                           model=ModelHParams(embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8]),
                           train=TrainConfig(epochs=2, lr=0.01, batch_size=16, prefetch=prefetch),
                           backend="reference")

    enc = fit_encoders(job(0))
    plain, ahead = run_training(job(0), enc), run_training(job(3), enc)
    assert plain.history[-1]["valid_logloss"] == ahead.history[-1]["valid_logloss"]
    assert all(torch.equal(v, ahead.state_dict[k]) for k, v in plain.state_dict.items())


def test_the_default_prefetches_on_a_gpu_only_and_a_setting_wins():
    from ml.train import GPU_PREFETCH, TrainConfig

    assert GPU_PREFETCH >= 1
    assert TrainConfig().prefetch_depth("cpu") == 0
    assert TrainConfig().prefetch_depth("cuda") == TrainConfig().prefetch_depth(torch.device("cuda", 1)) == GPU_PREFETCH
    assert TrainConfig(prefetch=0).prefetch_depth("cuda") == 0
    assert TrainConfig(prefetch=3).prefetch_depth("cpu") == 3
    assert TrainConfig().loading("cuda:0") == {"prefetch": GPU_PREFETCH, "pin_memory": True}
    assert TrainConfig(prefetch=1).loading("cpu") == {"prefetch": 1, "pin_memory": False}
    with pytest.raises(ValueError, match="prefetch >= 0"):
        TrainConfig(prefetch=-1)


def test_batches_for_a_gpu_are_pinned_by_the_producer_thread(lake, monkeypatch):
    """With pin_memory, every tensor of every batch goes through Tensor.pin_memory, on the
    prefetching thread (CUDA is not needed to see it: pin_memory is replaced by a copy)."""
    lf = read_examples(GoldStore(lake))
    enc = Encoders.fit(lf.collect(), default_spec())
    pinned_on: list[str] = []

    def pin(t: torch.Tensor) -> torch.Tensor:
        pinned_on.append(threading.current_thread().name)
        return t.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    plain = list(iter_batches(lf, enc, 32, shuffle_seed=1))
    assert pinned_on == []
    ahead = list(iter_batches(lf, enc, 32, shuffle_seed=1, prefetch=2, pin_memory=True))
    assert len(ahead) == len(plain) > 3 and len(pinned_on) == 3 * len(plain)
    assert set(pinned_on) == {"batches"}
    for a, b in zip(plain, ahead):
        assert torch.equal(a.dense, b.dense) and torch.equal(a.sparse, b.sparse)
