"""ml.sharded, ml.devices and the sharding plan: the fast parts of model-parallel training.

Two real ranks (DMP over 2 gloo processes) are exercised through Ray in
tests/ml/test_ray_training.py; here one process: the empty padding step, the planner's error
for a plan that does not fit, and `use_gpu=True` refused before Ray starts.
"""

from __future__ import annotations

import pytest
import torch

from ml.model import build_model
from ml.sharded import empty_batch
from ml.train import TrainConfig, train_epoch
from tests.ml.synthetic_task import TRAIN, batches, model_config

FUSED = TrainConfig(epochs=1, lr=0.01, sparse_lr=0.05, fused=True, sparse_optimizer="adagrad")


def test_an_empty_batch_is_a_step_that_counts_nothing():
    torch.manual_seed(0)
    model = build_model(model_config(), "reference")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    empty = empty_batch(model_config())
    assert len(empty) == 0 and empty.sparse.shape[1] == len(model_config().sparse_cardinalities)
    out = train_epoch(model, [empty, empty], optimizer, TrainConfig())
    assert out["samples"] == 0 and out["steps"] == 0 and out["loss"] == 0.0
    # zero gradients: plain SGD leaves every weight where it was
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    real = batches(TRAIN, 100)[:2]
    out = train_epoch(model, [real[0], empty, real[1]], optimizer, TrainConfig())
    assert out["samples"] == 200 and out["steps"] == 2 and out["loss"] > 0


def test_a_plan_that_does_not_fit_names_the_planner_error(process_group):
    from ml.optim import ShardingPlanError, prepare_fused

    model = build_model(model_config(), "torchrec")
    with pytest.raises(ShardingPlanError, match=r"fits 1 rank\(s\) of 0 MiB each on cpu "
                                               r"\(torchrec PlannerError"):
        prepare_fused(model, FUSED, memory_per_rank=1024)


def test_use_gpu_without_cuda_is_refused_before_ray_starts(monkeypatch, tmp_path):
    import ml.ray_training as rt
    from ml.devices import DeviceUnavailableError

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(rt, "init_ray", no_ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    job = type("Job", (), {"train": FUSED})()  # only job.train is read before Ray starts
    with pytest.raises(DeviceUnavailableError,
                       match=r"no CUDA device is visible to torch.*CUDA build of fbgemm-gpu"):
        rt.train_on_ray(job, None, use_gpu=True, storage_path=str(tmp_path), run_name="gpu")


def test_without_the_cuda_fbgemm_a_gpu_job_trains_the_plain_model(monkeypatch):
    import ml.devices as devices
    from ml.training_job import DataWindow, TrainingJob

    job = TrainingJob(data=object.__new__(DataWindow))  # the default job: fused TorchRec
    monkeypatch.setattr(devices, "cuda_fbgemm_available", lambda: False)
    plain = devices.for_gpu(job)
    assert (plain.backend, plain.train.fused) == ("reference", False)
    assert plain.train.lr == job.train.lr and plain.model == job.model
    monkeypatch.setattr(devices, "cuda_fbgemm_available", lambda: True)
    assert devices.for_gpu(job) is job
