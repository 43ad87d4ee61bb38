"""Training: learnability on a synthetic task, head weights, NaN guard, checkpoints, fused path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ml.batch import HEADS, Batch
from ml.model import ModelConfig, build_model
from ml.train import (
    TrainConfig,
    evaluate_logloss,
    fit,
    load_checkpoint,
    make_optimizer,
    roc_auc,
    save_checkpoint,
    setup_training,
    train_epoch,
)

CARDS = [7, 11, 4]
N_DENSE = 3


def _model_config() -> ModelConfig:
    return ModelConfig(
        sparse_cardinalities=CARDS, n_dense=N_DENSE, embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[16]
    )


def _synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels depend on a sparse id and a dense value, per head differently."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(n, N_DENSE, generator=g)
    sparse = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)
    odd = (sparse[:, 0] % 2 == 1).float() * 2 - 1  # take: parity of feature 0's id ...
    low = (sparse[:, 1] < 5).float() * 2 - 1  # complete: feature 1's id below 5 ...
    logits = torch.stack(
        [2.5 * odd + 2.0 * dense[:, 0], 2.5 * low - 2.0 * dense[:, 1], 3.0 * dense[:, 2]], dim=1
    )
    labels = (torch.rand(n, 3, generator=g) < torch.sigmoid(logits)).float()
    return dense, sparse, labels


def _batches(data, batch_size: int, seed: int | None = None) -> list[Batch]:
    dense, sparse, labels = data
    idx = torch.arange(len(dense))
    if seed is not None:
        idx = torch.randperm(len(dense), generator=torch.Generator().manual_seed(seed))
    return [
        Batch(dense[i], sparse[i], labels[i]) for i in idx.split(batch_size)
    ]


TRAIN = _synthetic(800, seed=1)
VALID = _synthetic(400, seed=2)


def test_roc_auc_matches_definition():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    pairs = [(p, q) for p in s[y == 1] for q in s[y == 0]]
    expected = np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in pairs])
    assert roc_auc(y, s) == pytest.approx(expected)
    assert roc_auc(np.ones(3), np.arange(3)) != roc_auc(np.ones(3), np.arange(3))  # NaN


@pytest.mark.parametrize("backend", ["reference", "torchrec"])
def test_learns_synthetic_task(backend):
    torch.manual_seed(0)
    model = build_model(_model_config(), backend=backend)
    config = TrainConfig(epochs=4, lr=0.02, seed=0)
    before = evaluate_logloss(model, _batches(VALID, 200))
    seen = []
    epoch = [0]

    def batches():
        epoch[0] += 1
        return _batches(TRAIN, 32, seed=epoch[0])

    history = fit(model, batches, config, on_epoch_end=lambda e, m, mdl: seen.append((e, m)))
    after = evaluate_logloss(model, _batches(VALID, 200))
    assert [e for e, _ in seen] == [0, 1, 2, 3]
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


@pytest.mark.parametrize("backend", ["reference", "torchrec"])
def test_checkpoint_round_trip_resumes(tmp_path, backend):
    torch.manual_seed(0)
    config = TrainConfig(epochs=3, lr=0.01, optimizer="adagrad")
    model = build_model(_model_config(), backend=backend)
    path = tmp_path / "ckpt" / "last.pt"
    snapshots = {}

    def checkpoint(epoch, metrics, m):
        save_checkpoint(path, m, optimizers[0], epoch)
        snapshots[epoch] = {k: v.clone() for k, v in m.state_dict().items()}

    model, optimizer = setup_training(model, config)
    optimizers = [optimizer]
    batches = lambda: _batches(TRAIN, 100)  # noqa: E731
    config_2 = TrainConfig(epochs=2, lr=0.01, optimizer="adagrad")
    fit(model, batches, config_2, optimizer=optimizer, on_epoch_end=checkpoint)
    assert path.exists() and not path.with_name("last.pt.tmp").exists()

    # a fresh process would do this: build, set up, load, continue at epoch + 1
    torch.manual_seed(123)
    resumed, resumed_opt = setup_training(build_model(_model_config(), backend=backend), config)
    epoch = load_checkpoint(path, resumed, resumed_opt)
    assert epoch == 1
    for k, v in resumed.state_dict().items():
        torch.testing.assert_close(v, snapshots[1][k], rtol=0, atol=0)
    assert resumed_opt.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    # continuing both gives the same third epoch (same weights, same optimizer state)
    fit(model, batches, config, optimizer=optimizer, start_epoch=2)
    hist = fit(resumed, batches, config, optimizer=resumed_opt, start_epoch=epoch + 1)
    assert [h["epoch"] for h in hist] == [2.0]
    for k, v in resumed.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=1e-6, atol=1e-7)


def test_checkpoint_moves_between_backends(tmp_path):
    trec = build_model(_model_config(), backend="torchrec")
    save_checkpoint(tmp_path / "c.pt", trec, None, 4)
    ref = build_model(_model_config(), backend="reference")
    assert load_checkpoint(tmp_path / "c.pt", ref) == 4
    b = _batches(VALID, 50)[0]
    torch.testing.assert_close(ref(b.dense, b.sparse), trec(b.dense, b.sparse))


def test_train_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(TypeError):
        TrainConfig(3)  # keyword arguments only
    assert TrainConfig().head_weights == {"take": 1.0, "complete": 0.5, "music_like": 0.5}
    assert math.isclose(TrainConfig(lr=0.5).lr, 0.5)


# --- the fused path: DistributedModelParallel, gloo, world size 1 -----------------------------


@pytest.fixture
def process_group():
    """Tear down a gloo group that the fused path creates, so no state leaks into other tests."""
    import torch.distributed as dist

    existed = dist.is_initialized()
    yield
    if not existed and dist.is_initialized():
        dist.destroy_process_group()


def test_fused_needs_supported_sparse_optimizer():
    with pytest.raises(ValueError, match="sparse_optimizer"):
        TrainConfig(fused=True)  # Adam for embeddings: no fused CPU kernel
    TrainConfig(fused=True, sparse_optimizer="adagrad")
    with pytest.raises(TypeError, match="TorchRecDLRM"):
        setup_training(
            build_model(_model_config(), backend="reference"),
            TrainConfig(fused=True, optimizer="adagrad"),
        )


def test_fused_learns_keeps_weights_and_checkpoints(tmp_path, process_group):
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

    path = tmp_path / "fused.pt"
    history = fit(
        dmp,
        lambda: _batches(TRAIN, 32),
        config,
        optimizer=optimizer,
        on_epoch_end=lambda e, m, mdl: save_checkpoint(path, mdl, optimizer, e),
    )
    after = evaluate_logloss(dmp, [b])
    assert history[-1]["loss"] < history[0]["loss"]
    for h in HEADS:
        assert after[f"logloss_{h}"] < before[f"logloss_{h}"] - 0.1, h
        assert after[f"auc_{h}"] > 0.75, (h, after)

    # the checkpoint holds plain tensors: the reference model loads it and agrees
    ref = build_model(_model_config(), backend="reference")
    assert load_checkpoint(path, ref) == 2
    torch.testing.assert_close(ref(b.dense, b.sparse), dmp(b.dense, b.sparse), rtol=1e-5, atol=1e-6)
    # and a fresh fused model resumes with weights and optimizer state
    dmp2, optimizer2 = setup_training(build_model(_model_config(), backend="torchrec"), config)
    assert load_checkpoint(path, dmp2, optimizer2) == 2
    torch.testing.assert_close(dmp2(b.dense, b.sparse), dmp(b.dense, b.sparse))
    train_epoch(dmp, _batches(TRAIN, 100)[:2], optimizer, config)
    train_epoch(dmp2, _batches(TRAIN, 100)[:2], optimizer2, config)
    torch.testing.assert_close(dmp2(b.dense, b.sparse), dmp(b.dense, b.sparse), rtol=1e-5, atol=1e-6)
