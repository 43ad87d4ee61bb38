"""The single-process training entry point on a tiny gold lakehouse: windows, shards, resume."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import polars as pl
import pytest
import torch

from ml.checkpoint import read_info, read_weights
from ml.features import FeatureError
from ml.gold import GoldStore
from ml.model import build_model
from ml.train import TrainConfig
from ml.training_job import (
    DataWindow,
    ModelHParams,
    TrainingJob,
    checkpoint_hook,
    days_for_rank,
    fit_encoders,
    plan_window,
    run_training,
)
from tests.ml.synthetic_task import assert_same_state, optimizer_states, snapshot
from tests.ml.tiny_gold import E1, E2, E3, build_lakehouse

TINY = ModelHParams(embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8])


def _train(epochs: int = 2) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=0.01, batch_size=16)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_lakehouse(tmp_path_factory.mktemp("job"))


def test_plan_window_holds_out_the_latest_days(lake):
    w = plan_window(GoldStore(lake), train_days=5, valid_days=1)
    assert (w.train_start, w.train_end, w.valid_start, w.valid_end) == (E1, E2, E3, E3)
    w2 = plan_window(GoldStore(lake), train_days=1, valid_days=1, end=E2)
    assert (w2.train_start, w2.train_end, w2.valid_end) == (E1, E1, E2)


def test_the_held_out_window_is_sized_by_lists(lake):
    gold = GoldStore(lake)
    per_day = gold.lists_per_day(E1, E3)
    takes = gold.takes(E1, E3).collect()
    assert per_day[E3] == takes.filter(pl.col("event_date") == E3).select("user_id", "platform").unique().height
    # enough lists on the last day: one day, as valid_days says
    w = plan_window(gold, train_days=5, valid_days=1, valid_lists=per_day[E3])
    assert w.valid_start == E3
    # one list more: the day before joins the held-out window
    w = plan_window(gold, train_days=5, valid_days=1, valid_lists=per_day[E3] + 1)
    assert (w.train_end, w.valid_start, w.valid_end) == (E1, E2, E3)
    # never more than half the dates: the rest is left to train on
    w = plan_window(gold, train_days=5, valid_days=1, valid_lists=10**6)
    assert (w.train_start, w.train_end, w.valid_start) == (E1, E1, E2)


def test_negatives_keep_the_first_sampled_negatives_of_training_only(lake):
    from ml.training_job import _examples

    gold = GoldStore(lake)
    w = plan_window(gold, train_days=5, valid_days=1, negatives=1)
    train = _examples(w, w.train_start, w.train_end).collect()
    every = _examples(plan_window(gold, train_days=5, valid_days=1), w.train_start, w.train_end).collect()
    assert set(train["sample_index"]) == {0, 1} and max(every["sample_index"]) > 1
    assert train.height == every.filter(pl.col("sample_index") <= 1).height
    assert train.filter(pl.col("label_take") == 1).height == every.filter(pl.col("label_take") == 1).height
    # the held-out examples keep every negative (their log-loss and AUC stay comparable)
    held = _examples(w, w.valid_start, w.valid_end, training=False).collect()
    assert max(held["sample_index"]) > 1
    for bad in (0, -1):  # without negatives every example is a positive
        with pytest.raises(ValueError, match="negatives must be >= 1"):
            plan_window(gold, train_days=5, valid_days=1, negatives=bad)


def test_missing_or_empty_training_table_is_named(tmp_path, lake):
    with pytest.raises(FileNotFoundError, match="gold/training_examples"):
        plan_window(GoldStore(str(tmp_path / "nothing")), train_days=3)
    empty = tmp_path / "empty"
    shutil.copytree(lake, empty)
    shutil.rmtree(empty / "gold" / "training_examples")
    schema = pl.read_delta(f"{lake}/gold/training_examples").schema
    pl.DataFrame(schema=schema).write_delta(str(empty / "gold" / "training_examples"))
    with pytest.raises(ValueError, match="training_examples is empty"):
        plan_window(GoldStore(str(empty)), train_days=3)
    with pytest.raises(ValueError, match="need at least 3"):
        plan_window(GoldStore(lake), train_days=3, valid_days=2, end=E2)


def test_window_rejects_overlapping_validation(lake):
    with pytest.raises(ValueError, match="must follow"):
        DataWindow(gold=GoldStore(lake), train_start=E1, train_end=E2, valid_start=E2, valid_end=E3)


def test_days_are_dealt_to_ranks_without_overlap():
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(11)]
    shares = [days_for_rank(days, r, 3, seed=5) for r in range(3)]
    assert sorted(d for s in shares for d in s) == days
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


PATHS = {  # the local path (reference model, Adam) and the model asset's (TorchRec, fused)
    "reference": dict(backend="reference", train=dict(lr=0.01, batch_size=16)),
    "torchrec-fused": dict(backend="torchrec", train=dict(lr=0.01, sparse_lr=0.05, batch_size=16,
                                                          sparse_optimizer="adagrad", fused=True)),
}


def _job(lake: str, path: str, epochs: int) -> TrainingJob:
    p = PATHS[path]
    return TrainingJob(data=plan_window(GoldStore(lake), train_days=2, valid_days=1), model=TINY,
                       train=TrainConfig(epochs=epochs, **p["train"]), backend=p["backend"])


@pytest.mark.parametrize("path", list(PATHS))
def test_train_validate_checkpoint_and_resume(lake, tmp_path, monkeypatch, process_group, path):
    job = _job(lake, path, 2)
    enc = fit_encoders(job)
    ckpt = tmp_path / "ckpt"
    result = run_training(job, enc, on_epoch_end=checkpoint_hook(ckpt))
    assert [h["epoch"] for h in result.history] == [0.0, 1.0] and result.resumed_from_epoch is None
    assert result.history[0]["samples"] == 39 * 2 + 40 * 3  # E1: 39 users x 2 rows, E2: 40 x 3
    assert 0.0 <= result.history[-1]["valid_auc_take"] <= 1.0
    model = build_model(result.model_config, "reference")
    model.load_state_dict(result.state_dict)
    assert torch.isfinite(model(torch.zeros(2, result.model_config.n_dense),
                                torch.zeros(2, result.model_config.n_sparse, dtype=torch.long))).all()

    # the checkpoint holds the last epoch: its weights are the run's result, its history the run's
    info = read_info(ckpt)
    assert info.epoch == 1 and same(info.history, result.history)
    saved_weights = read_weights(ckpt)
    saved_optimizer = torch.load(ckpt / "optimizer.pt", weights_only=False)
    assert_same_state(saved_weights, result.state_dict)

    # a restarted run continues after the saved epoch, from the saved weights and optimizer
    # state: what its first epoch starts from is the checkpoint, tensor for tensor
    started = _record_epoch_starts(monkeypatch)
    resumed = run_training(_job(lake, path, 3), enc, resume_from=ckpt)
    assert resumed.resumed_from_epoch == 1 and [h["epoch"] for h in resumed.history] == [0.0, 1.0, 2.0]
    assert same(resumed.history[:2], result.history)
    assert list(started) == [2]
    weights, optimizer = started[2]
    assert_same_state(weights, saved_weights)
    assert all(optimizer_states(optimizer)), "the saved optimizer state was not restored"
    assert_same_state(optimizer, snapshot(saved_optimizer))
    # ... and trained from there (epoch 2 changed the restored weights)
    assert any(not torch.equal(resumed.state_dict[k], v) for k, v in saved_weights.items())

    # resume_optimizer=False (another optimizer layout): the weights, a fresh optimizer
    started.clear()
    run_training(_job(lake, path, 3), enc, resume_from=ckpt, resume_optimizer=False)
    weights, optimizer = started[2]
    assert_same_state(weights, saved_weights)
    with pytest.raises(AssertionError):
        assert_same_state(optimizer, snapshot(saved_optimizer))

    # nothing left to train: the result is the checkpoint's weights and history
    again = run_training(job, enc, resume_from=ckpt)
    assert again.resumed_from_epoch == 1 and same(again.history, result.history)
    assert_same_state(again.state_dict, saved_weights)


def same(a: list[dict], b: list[dict]) -> bool:
    """Histories equal, NaN (an AUC without positives) equal to NaN."""
    return json.dumps(a) == json.dumps(b)


def _record_epoch_starts(monkeypatch) -> dict[int, tuple[dict, dict]]:
    """epoch -> (weights, optimizer state) as `run_training` hands them to `train_epoch`."""
    import ml.training_job as training_job
    from ml.checkpoint import plain_state_dict

    started: dict[int, tuple[dict, dict]] = {}
    real = training_job.train_epoch

    def train_epoch(model, batches, optimizer, config, *, epoch=0, **kw):
        started[epoch] = (plain_state_dict(model), snapshot(optimizer.state_dict()))
        return real(model, batches, optimizer, config, epoch=epoch, **kw)

    monkeypatch.setattr(training_job, "train_epoch", train_epoch)
    return started


def test_the_plain_path_trains_on_the_device_it_is_given(lake):
    job = _job(lake, "reference", 1)
    enc = fit_encoders(job)
    on_cpu = run_training(job, enc, device="cpu")
    assert [h["epoch"] for h in on_cpu.history] == [0.0]
    assert all(v.device.type == "cpu" for v in on_cpu.state_dict.values())
    with pytest.raises(ValueError, match="FBGEMM.s CPU or CUDA kernel"):
        run_training(_job(lake, "torchrec-fused", 1), enc, device="meta")


def test_nan_feature_stops_before_training(lake, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(lake, bad)
    uf = pl.read_delta(f"{lake}/gold/user_features_daily").with_columns(
        pl.when(pl.col("user_id") == "u7").then(float("nan")).otherwise(pl.col("minutes_7d"))
        .alias("minutes_7d"))
    uf.write_delta(str(bad / "gold" / "user_features_daily"), mode="overwrite")
    job = TrainingJob(data=plan_window(GoldStore(str(bad)), train_days=2, valid_days=1), model=TINY,
                      train=_train(1), backend="reference")
    with pytest.raises(FeatureError, match="minutes_7d"):
        fit_encoders(job)


def test_params_for_mlflow_never_carry_storage_credentials(lake):
    """The job holds the S3 keys to read Delta; its MLflow params and metadata must not."""
    gold = GoldStore(lake, {"AWS_SECRET_ACCESS_KEY": "Sx9sentinel", "AWS_REGION": "eu-west-1"})
    job = TrainingJob(data=plan_window(gold, train_days=5, valid_days=1), model=TINY, train=_train())
    params = job.params()
    assert params["data.lakehouse_uri"] == lake
    assert "Sx9sentinel" not in repr(params) and not any("storage" in k for k in params)
    # nor does the job's repr (a log line, an error message)
    assert "Sx9sentinel" not in repr(job) and job.data.gold.storage_options["AWS_REGION"] == "eu-west-1"
