"""A synthetic three-head task small enough to train in a second (TRAIN, VALID), its model
config, and how two training states are compared (weights and optimizer state, tensor for
tensor): shared by the training, checkpoint and resume tests."""

from __future__ import annotations

import torch

from ml.batch import Batch
from ml.checkpoint import plain
from ml.model import ModelConfig

CARDS = [7, 11, 4]
N_DENSE = 3


def model_config() -> ModelConfig:
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


def batches(data, batch_size: int, seed: int | None = None) -> list[Batch]:
    dense, sparse, labels = data
    idx = torch.arange(len(dense))
    if seed is not None:
        idx = torch.randperm(len(dense), generator=torch.Generator().manual_seed(seed))
    return [
        Batch(dense[i], sparse[i], labels[i]) for i in idx.split(batch_size)
    ]


TRAIN = _synthetic(800, seed=1)
VALID = _synthetic(400, seed=2)


def snapshot(state):
    """A deep copy of nested state with every tensor plain (ShardedTensors made whole)."""
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state)
    value = plain(state)
    return value.clone() if isinstance(value, torch.Tensor) else value


def assert_same_state(got, want, where: str = "") -> None:
    """Nested state (state dicts, optimizer state) equal: tensors exactly, the rest by ==."""
    got, want = plain(got), plain(want)
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.shape == want.shape, f"{where}: {got!r}"
        same = torch.equal(got, want)
        assert same, f"{where} differs: max |diff| {(got.double() - want.double()).abs().max():.3g}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {set(got) ^ set(want)}"
        for k in want:
            assert_same_state(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_state(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def optimizer_states(state_dict: dict) -> list[dict]:
    """The per-parameter state of an optimizer's state_dict (of each part of a MultiOptimizer)."""
    return [s["state"] for s in state_dict.get("optimizers", [state_dict])]
