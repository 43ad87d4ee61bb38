"""The one checkpoint format (`ml.checkpoint`): what is saved is what is restored, weights and
optimizer state tensor for tensor, on the plain and the fused (DistributedModelParallel) path."""

from __future__ import annotations

import json

import pytest
import torch

from ml.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    plain_state_dict,
    read_info,
    read_weights,
    save_checkpoint,
)
from ml.model import build_model
from ml.optim import setup_training
from ml.train import TrainConfig, train_epoch
from tests.ml.synthetic_task import TRAIN, VALID, assert_same_state, optimizer_states, snapshot
from tests.ml.synthetic_task import batches as _batches
from tests.ml.synthetic_task import model_config as _model_config

CONFIGS = {
    "reference": ("reference", TrainConfig(lr=0.01, optimizer="adagrad")),
    "torchrec": ("torchrec", TrainConfig(lr=0.01, sparse_lr=0.05, sparse_optimizer="adagrad")),
    "torchrec-fused": ("torchrec", TrainConfig(lr=0.01, sparse_lr=0.05, sparse_optimizer="adagrad",
                                               fused=True)),
}


def _trained(name: str, seed: int = 0):
    backend, config = CONFIGS[name]
    torch.manual_seed(seed)
    model, optimizer = setup_training(build_model(_model_config(), backend=backend), config)
    for epoch in range(2):
        train_epoch(model, _batches(TRAIN, 100, seed=epoch), optimizer, config, epoch=epoch)
    return model, optimizer, config


@pytest.mark.parametrize("name", list(CONFIGS))
def test_restores_the_saved_weights_and_optimizer_state(name, tmp_path, process_group):
    model, optimizer, config = _trained(name)
    history = [{"epoch": 0.0, "loss": 0.7}, {"epoch": 1.0, "loss": float("nan")}]
    path = save_checkpoint(tmp_path / "ckpt", model, optimizer, 1, history=history, strategy="x")
    saved_weights, saved_optimizer = plain_state_dict(model), snapshot(optimizer.state_dict())
    assert all(optimizer_states(saved_optimizer)), "nothing to restore: no optimizer state yet"

    # a fresh process would do this: build, set up (another init), load
    backend, _ = CONFIGS[name]
    fresh, fresh_opt = setup_training(build_model(_model_config(), backend=backend), config)
    assert any(not torch.equal(v, saved_weights[k]) for k, v in plain_state_dict(fresh).items())
    info = load_checkpoint(path, fresh, fresh_opt)
    assert (info.epoch, info.meta) == (1, {"strategy": "x"})
    assert info.history[0] == history[0] and info.history[1]["loss"] != info.history[1]["loss"]
    assert_same_state(plain_state_dict(fresh), saved_weights)
    assert_same_state(snapshot(fresh_opt.state_dict()), saved_optimizer)

    # continuing both gives the same next epoch
    batches = _batches(TRAIN, 100, seed=7)
    train_epoch(model, batches, optimizer, config, epoch=2)
    train_epoch(fresh, batches, fresh_opt, config, epoch=2)
    for k, v in plain_state_dict(fresh).items():
        torch.testing.assert_close(v, plain_state_dict(model)[k], rtol=1e-6, atol=1e-7)


def test_without_the_optimizer_only_the_weights_come_back(tmp_path):
    model, optimizer, config = _trained("reference")
    save_checkpoint(tmp_path / "with", model, optimizer, 3)
    save_checkpoint(tmp_path / "without", model, None, 3)
    assert not (tmp_path / "without" / "optimizer.pt").exists()
    for path, opt_given in ((tmp_path / "with", False), (tmp_path / "without", True)):
        fresh, fresh_opt = setup_training(build_model(_model_config(), "reference"), config)
        assert load_checkpoint(path, fresh, fresh_opt if opt_given else None).epoch == 3
        assert_same_state(plain_state_dict(fresh), plain_state_dict(model))
        # a fresh optimizer (Adagrad's state starts at step 0, sums 0)
        steps = [float(p["step"]) for st in optimizer_states(fresh_opt.state_dict()) for p in st.values()]
        assert steps and set(steps) == {0.0}


def test_fused_weights_load_into_the_reference_model_without_a_process_group(tmp_path, process_group):
    model, optimizer, _ = _trained("torchrec-fused")
    path = save_checkpoint(tmp_path / "fused", model, optimizer, 1)
    # plain tensors only: `weights_only` unpickling admits no ShardedTensor
    weights = read_weights(path)
    assert all(type(v) is torch.Tensor for v in weights.values())
    ref = build_model(_model_config(), backend="reference")
    assert load_checkpoint(path, ref).epoch == 1
    b = _batches(VALID, 400)[0]
    torch.testing.assert_close(ref(b.dense, b.sparse), model(b.dense, b.sparse), rtol=1e-5, atol=1e-6)


def test_saving_replaces_the_checkpoint_whole_and_refuses_other_folders(tmp_path):
    model, optimizer, _ = _trained("reference")
    path = tmp_path / "ckpt"
    save_checkpoint(path, model, optimizer, 0, history=[{"epoch": 0.0}])
    save_checkpoint(path, model, None, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folder left
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint.json", "model.pt"]
    assert read_info(path).epoch == 1 and read_info(path).history == []

    other = tmp_path / "results"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="neither empty nor a checkpoint"):
        save_checkpoint(other, model, optimizer, 0)
    assert (other / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "results"]
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        read_info(other)


def test_a_copy_is_the_same_checkpoint_with_updated_additions(tmp_path):
    model, optimizer, _ = _trained("reference")
    src = save_checkpoint(tmp_path / "a", model, optimizer, 2, history=[{"epoch": 0.0}], strategy="s")
    dst = copy_checkpoint(src, tmp_path / "b", resumed_from_epoch=2)
    assert json.loads((dst / "checkpoint.json").read_text()) == {
        "strategy": "s", "resumed_from_epoch": 2, "epoch": 2, "history": [{"epoch": 0.0}]}
    assert_same_state(read_weights(dst), read_weights(src))
    assert (dst / "optimizer.pt").read_bytes() == (src / "optimizer.pt").read_bytes()
