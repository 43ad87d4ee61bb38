"""One epoch (`ml.train.train_epoch`) and the optimizers (`ml.optim`): learnability on a synthetic
task, head weights, NaN guard, the fused path. The loop over epochs, resuming and checkpoints are
tested where production runs them: tests/ml/test_training_job.py and tests/ml/test_checkpoint.py."""

from __future__ import annotations

import math

import pytest
import torch

from ml.batch import HEADS, Batch
from ml.model import build_model
from ml.optim import make_optimizer, setup_training
from ml.train import TrainConfig, evaluate_logloss, train_epoch
from tests.ml.synthetic_task import TRAIN, VALID
from tests.ml.synthetic_task import batches as _batches
from tests.ml.synthetic_task import model_config as _model_config

def train_epochs(model, optimizer, config: TrainConfig, epochs: int, batch_size: int = 32) -> list[dict]:
    """`train_epoch` once per epoch over TRAIN, reshuffled each time."""
    return [train_epoch(model, _batches(TRAIN, batch_size, seed=e + 1), optimizer, config, epoch=e)
            for e in range(epochs)]


@pytest.mark.parametrize("backend", ["reference", "torchrec"])
def test_learns_synthetic_task(backend):
    torch.manual_seed(0)
    config = TrainConfig(epochs=4, lr=0.02, seed=0)
    model, optimizer = setup_training(build_model(_model_config(), backend=backend), config)
    before = evaluate_logloss(model, _batches(VALID, 200))
    history = train_epochs(model, optimizer, config, 4)
    after = evaluate_logloss(model, _batches(VALID, 200))
    assert len(history) == 4 and history[-1]["samples"] == 800
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    for h in HEADS:
        assert after[f"logloss_{h}"] < before[f"logloss_{h}"] - 0.1, h
        assert after[f"auc_{h}"] > 0.75, (h, after)
    assert history[-1]["samples_per_s"] > 0


def test_zero_weight_head_gets_no_gradient():
    torch.manual_seed(0)
    model = build_model(_model_config(), backend="reference")
    config = TrainConfig(head_weights={"take": 1.0, "complete": 0.0, "music_like": 0.5})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = train_epoch(model, _batches(TRAIN, 100)[:1], optimizer, config)
    # the zero-weight head still reports its loss ...
    assert metrics["loss_complete"] > 0
    # ... but its own linear layer received no gradient and did not move
    for name in ("weight", "bias"):
        grad = getattr(model.heads["complete"], name).grad
        assert grad is None or torch.count_nonzero(grad) == 0
        assert torch.equal(model.state_dict()[f"heads.complete.{name}"], before[f"heads.complete.{name}"])
    assert torch.count_nonzero(model.heads["take"].weight.grad) > 0
    assert not torch.equal(model.heads["music_like"].weight, before["heads.music_like.weight"])
    # weighted total = sum of weight * per-head loss
    expected = metrics["loss_take"] + 0.5 * metrics["loss_music_like"]
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)


def test_unknown_head_weight_rejected():
    model = build_model(_model_config(), backend="reference")
    config = TrainConfig(head_weights={"take": 1.0, "clicks": 1.0})
    with pytest.raises(ValueError, match="clicks"):
        train_epoch(model, _batches(TRAIN, 100)[:1], make_optimizer(model, config), config)


def test_nan_loss_names_head_and_step():
    model = build_model(_model_config(), backend="reference")
    config = TrainConfig()
    batches = _batches(TRAIN, 100)[:3]
    bad = batches[2]
    labels = bad.labels.clone()
    labels[0, 2] = float("nan")
    batches[2] = Batch(bad.dense, bad.sparse, labels)
    with pytest.raises(FloatingPointError, match=r"'music_like'.*epoch 5, step 2"):
        train_epoch(model, batches, make_optimizer(model, config), config, epoch=5)


def test_train_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(TypeError):
        TrainConfig(3)  # keyword arguments only
    assert TrainConfig().head_weights == {"take": 1.0, "complete": 0.5, "music_like": 0.5}
    assert math.isclose(TrainConfig(lr=0.5).lr, 0.5)


# --- the fused path: DistributedModelParallel, gloo, world size 1 -----------------------------


def test_fused_needs_supported_sparse_optimizer():
    with pytest.raises(ValueError, match="sparse_optimizer"):
        TrainConfig(fused=True)  # Adam for embeddings: no fused CPU kernel
    TrainConfig(fused=True, sparse_optimizer="adagrad")
    with pytest.raises(TypeError, match="TorchRec backend"):
        setup_training(
            build_model(_model_config(), backend="reference"),
            TrainConfig(fused=True, optimizer="adagrad"),
        )


def test_fused_learns_and_keeps_weights(process_group):
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection

    torch.manual_seed(0)
    config = TrainConfig(epochs=3, lr=0.02, sparse_lr=0.1, fused=True, sparse_optimizer="adagrad")
    model = build_model(_model_config(), backend="torchrec")
    b = _batches(VALID, 400)[0]
    expected = model(b.dense, b.sparse).detach()
    dmp, optimizer = setup_training(model, config)
    assert isinstance(dmp, DistributedModelParallel)
    ebc = dmp.module.sparse_arch.embedding_bag_collection
    assert isinstance(ebc, ShardedEmbeddingBagCollection)
    torch.testing.assert_close(dmp(b.dense, b.sparse), expected)  # sharding kept the weights
    before = evaluate_logloss(dmp, [b])
    history = train_epochs(dmp, optimizer, config, 3)
    after = evaluate_logloss(dmp, [b])
    assert history[-1]["loss"] < history[0]["loss"]
    for h in HEADS:
        assert after[f"logloss_{h}"] < before[f"logloss_{h}"] - 0.1, h
        assert after[f"auc_{h}"] > 0.75, (h, after)


def test_the_time_waiting_for_batches_is_counted_apart():
    """train_epoch's input_seconds: the time spent getting the next batch, here a slow source."""
    import time

    cfg = _model_config()
    model, opt = setup_training(build_model(cfg, "reference"), TrainConfig(lr=0.01))
    data = _batches(TRAIN, 200)  # 4 batches

    def slow():
        for b in data:
            time.sleep(0.05)
            yield b

    fast = train_epoch(model, data, opt, TrainConfig(lr=0.01))
    waited = train_epoch(model, slow(), opt, TrainConfig(lr=0.01))
    assert waited["samples"] == fast["samples"] == sum(len(b) for b in data)
    assert 0.05 * len(data) <= waited["input_seconds"] <= waited["seconds"]
    assert 0.0 <= fast["input_seconds"] < 0.05 * len(data)


def test_input_wait_share_of_epochs():
    from ml.train import input_wait_share

    epochs = [{"seconds": 4.0, "input_seconds": 1.0}, {"seconds": 6.0, "input_seconds": 0.5}]
    assert input_wait_share(epochs) == pytest.approx(1.5 / 10.0)
    # an epoch from a checkpoint written before the wait was counted: none waited
    assert input_wait_share([{"seconds": 5.0}, {"seconds": 5.0, "input_seconds": 2.0}]) == pytest.approx(0.2)
    assert input_wait_share([]) == 0.0
