"""ml.ray_training: the training loop in Ray Train workers, per-epoch checkpoints, resume.

Real Ray (a local 2-CPU instance, `ray_local`), real gloo process groups, a tiny gold lakehouse
in Delta (`ray_gold_lake`; both fixtures in tests/conftest.py).
Each TorchTrainer start costs ~20-30 s on 2 cores (controller and worker start-up dominate), so
the module is marked slow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.checkpoint import read_info, read_weights
from ml.model import build_model
from ml.training_job import TrainingJob, fit_encoders, train_batches
from tests.ml.ray_job import check_state_dict as _check_state_dict
from tests.ml.ray_job import tiny_job as _job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(ray_gold_lake) -> TrainingJob:
    return _job(ray_gold_lake)


@pytest.fixture(scope="module")
def encoders(job):
    return fit_encoders(job)


def test_workers_keep_polars_freed_pages(ray_local):
    """`init_ray`'s job-wide environment: a worker's polars keeps the pages its reads freed
    (`ml.allocator`; the Train workers get the same in their own runtime env)."""
    import os

    import ray

    from ml.allocator import OPTIONS, VAR

    @ray.remote
    def seen() -> str:
        import polars  # noqa: F401 - writes its default first, as in a training worker

        return os.environ[VAR]

    assert ray.get(seen.remote()).endswith(f",{OPTIONS}")


def test_one_worker_trains_and_checkpoints(ray_local, job, encoders, tmp_path):
    from ml.ray_training import train_on_ray

    out = train_on_ray(job, encoders, num_workers=1, storage_path=str(tmp_path / "runs"),
                       run_name="one")
    assert out.num_workers == 1 and out.resumed_from_epoch is None
    assert [h["epoch"] for h in out.history] == [0.0, 1.0]
    assert all(h["samples"] == 198 and h["world_size"] == 1 for h in out.history)
    assert all("valid_logloss" in h for h in out.history)
    assert out.history[1]["loss"] < out.history[0]["loss"]
    ckpt = Path(out.checkpoint_path)
    assert ckpt.is_dir() and ckpt.parent == tmp_path / "runs" / "one"
    files = {p.name for p in ckpt.iterdir()}
    assert files == {"model.pt", "optimizer.pt", "checkpoint.json"}  # ml.checkpoint's format
    info = read_info(ckpt)
    assert info.epoch == 1 and info.meta["strategy"] == "cpu-fused" and len(info.history) == 2
    assert all(torch.equal(v, out.state_dict[k]) for k, v in read_weights(ckpt).items())
    _check_state_dict(out, encoders, job)
    assert out.seconds > 0


def test_two_gloo_workers_shard_the_tables_and_split_the_days(ray_local, ray_gold_lake, encoders,
                                                               tmp_path):
    """Batch size 32: rank 0's day gives 3 steps, rank 1's 4 - uneven inputs under the sharded
    model's all-to-alls (the fused DMP path, table-wise over 2 gloo workers)."""
    from ml.ray_training import train_on_ray

    job = _job(ray_gold_lake, batch_size=32)
    out = train_on_ray(job, encoders, num_workers=2, storage_path=str(tmp_path / "runs"),
                       run_name="two")
    assert out.num_workers == 2 and len(out.history) == 2
    for h in out.history:
        assert h["world_size"] == 2
        per_rank = sorted([h["samples_rank0"], h["samples_rank1"]])
        assert per_rank == [78.0, 120.0]  # one whole day each: E1 (39 users x 2), E2 (40 x 3)
        assert h["samples_total"] == 198 and h["samples"] < h["samples_total"]
        # validated on both ranks together: every held-out example of E3 scored once
        assert h["valid_samples"] == 120 and 0 < h["valid_logloss"] < 1
    assert out.history[1]["valid_logloss"] < out.history[0]["valid_logloss"]
    ckpt = Path(out.checkpoint_path)
    info = read_info(ckpt)
    assert info.meta["strategy"] == "cpu-dmp2" and "optimizer_state" not in info.meta
    # both ranks' uploads merged into one checkpoint: DCP shards of each rank, rank 0's metadata
    assert {p.name for p in (ckpt / "sharded").iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    assert not (ckpt / "optimizer.pt").exists()
    logits = _check_state_dict(out, encoders, job)
    one_worker_keys = build_model(out.model_config, "torchrec").state_dict().keys()
    assert set(out.state_dict) == set(one_worker_keys)
    assert logits.shape[1] == 3


def test_rejects_relative_storage_path(job, encoders):
    from ml.ray_training import train_on_ray

    with pytest.raises(ValueError, match="absolute"):
        train_on_ray(job, encoders, storage_path="runs", run_name="x")
    with pytest.raises(ValueError, match="num_workers"):
        train_on_ray(job, encoders, storage_path="/tmp/x", run_name="x", num_workers=0)


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, ml.ray_training; print('ray' in sys.modules, 'dagster' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


def test_job_is_picklable_for_the_workers(job):
    import pickle

    again = pickle.loads(pickle.dumps(job))
    assert dataclasses.asdict(again) == dataclasses.asdict(job)


@pytest.mark.extra  # two TorchTrainer runs: ~45 s on 2 cores
def test_resuming_with_another_world_size_restores_the_weights_and_says_so(
    ray_local, ray_gold_lake, encoders, tmp_path
):
    """Epoch 0 on 1 worker (fused, unsharded), then the same run resumed on 2 sharded workers:
    the weights, epoch and history come back; the optimizer state (another layout) is reset,
    and the checkpoint says so."""
    from ml.ray_training import train_on_ray

    storage = str(tmp_path / "runs")
    one = train_on_ray(_job(ray_gold_lake, epochs=1), encoders, num_workers=1,
                       storage_path=storage, run_name="resize")
    out = train_on_ray(_job(ray_gold_lake, epochs=2), encoders, num_workers=2,
                       storage_path=storage, run_name="resize")
    assert out.resumed_from_epoch == 0 and [h["epoch"] for h in out.history] == [0.0, 1.0]
    assert out.history[0] == one.history[0]
    info = read_info(out.checkpoint_path)
    assert info.meta["strategy"] == "cpu-dmp2"
    assert info.meta["optimizer_state"] == (
        "reset: the checkpoint of epoch 0 was written as 'cpu-fused', this run is 'cpu-dmp2'")
    # trained on from epoch 0's weights: its validation loss keeps falling (from scratch, the
    # first epoch's is ~0.39 as in epoch 0)
    assert out.history[1]["valid_logloss"] < one.history[0]["valid_logloss"] - 0.05


@pytest.mark.extra  # a TorchTrainer run of 2 workers: ~25 s on 2 cores
def test_two_workers_train_the_two_tower_sharded(ray_local, ray_gold_lake, tmp_path):
    from ml.ray_training import train_on_ray
    from ml.two_tower import TowerEncoder

    base = _job(ray_gold_lake, batch_size=32)
    job = dataclasses.replace(base, model=dataclasses.replace(base.model, architecture="two_tower",
                                                              tower=[8, 4]))
    encoders = fit_encoders(job)
    out = train_on_ray(job, encoders, num_workers=2, storage_path=str(tmp_path / "runs"),
                       run_name="towers")
    assert read_info(out.checkpoint_path).meta["strategy"] == "cpu-dmp2"
    for h in out.history:  # the takes only: 39 on E1, 40 on E2; every held-out pair scored
        assert sorted([h["samples_rank0"], h["samples_rank1"]]) == [39.0, 40.0]
        assert h["valid_samples"] == 120 and h["valid_auc_take"] == h["valid_auc_take"]
    _check_state_dict(out, encoders, job)  # scores in the plain model, without training code
    batch = next(iter(train_batches(job, encoders, epoch=0)))
    users = TowerEncoder(out.state_dict, out.model_config).users(batch.dense, batch.sparse)
    assert users.shape == (len(batch), 4) and np.isfinite(users).all()
