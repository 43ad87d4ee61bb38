"""The single-process training entry point on a tiny gold lakehouse: windows, shards, resume."""

from __future__ import annotations

import datetime as dt
import shutil

import polars as pl
import pytest
import torch

from ml.features import FeatureError
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
from tests.ml.test_gold_reader import E1, E2, E3, build_lakehouse

TINY = ModelHParams(embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8])


def _train(epochs: int = 2) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=0.01, batch_size=16)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_lakehouse(tmp_path_factory.mktemp("job"))


def test_plan_window_holds_out_the_latest_days(lake):
    w = plan_window(lake, train_days=5, valid_days=1)
    assert (w.train_start, w.train_end, w.valid_start, w.valid_end) == (E1, E2, E3, E3)
    w2 = plan_window(lake, train_days=1, valid_days=1, end=E2)
    assert (w2.train_start, w2.train_end, w2.valid_end) == (E1, E1, E2)


def test_missing_or_empty_training_table_is_named(tmp_path, lake):
    with pytest.raises(FileNotFoundError, match="gold/training_examples"):
        plan_window(str(tmp_path / "nothing"), train_days=3)
    empty = tmp_path / "empty"
    shutil.copytree(lake, empty)
    shutil.rmtree(empty / "gold" / "training_examples")
    schema = pl.read_delta(f"{lake}/gold/training_examples").schema
    pl.DataFrame(schema=schema).write_delta(str(empty / "gold" / "training_examples"))
    with pytest.raises(ValueError, match="training_examples is empty"):
        plan_window(str(empty), train_days=3)
    with pytest.raises(ValueError, match="need at least 3"):
        plan_window(lake, train_days=3, valid_days=2, end=E2)


def test_window_rejects_overlapping_validation(lake):
    with pytest.raises(ValueError, match="must follow"):
        DataWindow(lakehouse_uri=lake, train_start=E1, train_end=E2, valid_start=E2, valid_end=E3)


def test_days_are_dealt_to_ranks_without_overlap():
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(11)]
    shares = [days_for_rank(days, r, 3, seed=5) for r in range(3)]
    assert sorted(d for s in shares for d in s) == days
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_train_validate_checkpoint_and_resume(lake, tmp_path):
    job = TrainingJob(data=plan_window(lake, train_days=2, valid_days=1), model=TINY,
                      train=_train(2), backend="reference")
    enc = fit_encoders(job)
    result = run_training(job, enc, on_epoch_end=checkpoint_hook(tmp_path))
    assert [h["epoch"] for h in result.history] == [0.0, 1.0]
    assert result.history[0]["samples"] == 39 * 2 + 40 * 3  # E1: 39 users x 2 rows, E2: 40 x 3
    assert 0.0 <= result.history[-1]["valid_auc_take"] <= 1.0
    model = build_model(result.model_config, "reference")
    model.load_state_dict(result.state_dict)
    assert torch.isfinite(model(torch.zeros(2, result.model_config.n_dense),
                                torch.zeros(2, result.model_config.n_sparse, dtype=torch.long))).all()

    # a restarted run continues after the saved epoch, with the saved weights
    longer = TrainingJob(data=job.data, model=TINY, train=_train(3), backend="reference")
    resumed = run_training(longer, enc, resume_from=tmp_path / "checkpoint.pt")
    assert resumed.start_epoch == 2 and [h["epoch"] for h in resumed.history] == [2.0]


def test_nan_feature_stops_before_training(lake, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(lake, bad)
    uf = pl.read_delta(f"{lake}/gold/user_features_daily").with_columns(
        pl.when(pl.col("user_id") == "u7").then(float("nan")).otherwise(pl.col("minutes_7d"))
        .alias("minutes_7d"))
    uf.write_delta(str(bad / "gold" / "user_features_daily"), mode="overwrite")
    job = TrainingJob(data=plan_window(str(bad), train_days=2, valid_days=1), model=TINY,
                      train=_train(1), backend="reference")
    with pytest.raises(FeatureError, match="minutes_7d"):
        fit_encoders(job)


def test_params_for_mlflow_never_carry_storage_credentials(lake):
    """The job holds the S3 keys to read Delta; its MLflow params and metadata must not."""
    import dataclasses

    w = dataclasses.replace(plan_window(lake, train_days=5, valid_days=1),
                            storage_options={"AWS_SECRET_ACCESS_KEY": "Sx9sentinel", "AWS_REGION": "eu-west-1"})
    params = TrainingJob(data=w, model=TINY, train=_train()).params()
    assert params["data.lakehouse_uri"] == lake
    assert "Sx9sentinel" not in repr(params) and not any("storage" in k for k in params)
