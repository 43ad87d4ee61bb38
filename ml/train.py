"""One epoch of the multi-head DLRM, and its evaluation: the steps every training path takes.

`ml.training_job.run_training` is the one loop over epochs (it builds the model, the optimizer
with `ml.optim.setup_training`, resumes from `ml.checkpoint`, validates and calls the epoch hook);
`train_epoch` is one pass over the batches it is given, on the CPU or any `device`.
No Ray, no data reading and no orchestration here (benchmarks/gpu_bench.py imports it where only
torch and numpy exist).
"""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.batch import HEADS, Batch
from ml.metrics import roc_auc

OPTIMIZERS = ("adam", "adagrad")
# batches prepared ahead on a GPU by default (`TrainConfig.prefetch_depth`)
GPU_PREFETCH = 2


def _default_head_weights() -> dict[str, float]:
    return {"take": 1.0, "complete": 0.5, "music_like": 0.5}


@dataclass(kw_only=True)
class TrainConfig:
    """Training hyper-parameters.

    lr: learning rate of the dense parameters (and of the embeddings unless sparse_lr is set).
    batch_size: for the code that produces the batches (train_epoch consumes whatever it gets).
    prefetch: batches the training job prepares ahead on a background thread (reading and
        encoding overlap the step; the same batches in the same order); 0: in the step's thread.
        None (the default): `prefetch_depth` decides by the device the model trains on.
    cache_mb: encoded training (and validation) chunks kept in memory across epochs, up to this
        many MiB each (`ml.examples.ChunkCache`): epochs after the first skip reading, joining
        and encoding the gold rows; the same batches in the same order. 0: read every epoch.
    weight_decay: applied to the dense (non-embedding) parameters only.
    head_weights: loss weight per head; a head missing here gets 1.0, an unknown name is an error.
    optimizer: "adam" or "adagrad" for the dense parameters.
    sparse_optimizer: "adam" or "adagrad" for the embedding tables; None = same as `optimizer`.
        FBGEMM's fused CPU kernel has no Adam: with fused=True use "adagrad" here.
    fused: TorchRec backend only: DistributedModelParallel (gloo) with the fused CPU kernel.
    """

    epochs: int = 3
    lr: float = 1e-3
    sparse_lr: float | None = None
    batch_size: int = 512
    prefetch: int | None = None
    cache_mb: int = 1024
    weight_decay: float = 0.0
    head_weights: dict[str, float] = field(default_factory=_default_head_weights)
    seed: int = 0
    optimizer: str = "adam"
    sparse_optimizer: str | None = None
    fused: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.sparse_optimizer is not None and self.sparse_optimizer not in OPTIMIZERS:
            raise ValueError(
                f"sparse_optimizer must be one of {OPTIMIZERS} or None, got {self.sparse_optimizer!r}"
            )
        if self.fused and self.sparse_optimizer_name == "adam":
            raise ValueError(
                "fused=True: FBGEMM's CPU kernel supports no Adam for embeddings; "
                'set sparse_optimizer="adagrad" (dense parameters may keep optimizer="adam")'
            )
        if (self.epochs < 0 or self.lr <= 0 or self.batch_size < 1
                or self.prefetch is not None and self.prefetch < 0 or self.cache_mb < 0):
            raise ValueError("epochs >= 0, lr > 0, batch_size >= 1, prefetch >= 0 and cache_mb >= 0 "
                             "are required")
        if any(w < 0 for w in self.head_weights.values()):
            raise ValueError(f"head weights must be >= 0: {self.head_weights}")

    def prefetch_depth(self, device: torch.device | str) -> int:
        """Batches prepared ahead when training on `device`: `prefetch` if set; else
        GPU_PREFETCH on a GPU, whose step leaves the CPU free to read and encode the next ones, and
        0 on the CPU, where the step's threads take every core: a second thread only competes
        with them (on 2 cores it was slower, docs/benchmarks.md#the-input-pipeline-issue-17)."""
        if self.prefetch is not None:
            return self.prefetch
        return GPU_PREFETCH if torch.device(device).type == "cuda" else 0

    def loading(self, device: torch.device | str) -> dict[str, int | bool]:
        """`ml.examples.iter_batches`'s prefetch and pin_memory for training on `device`:
        `prefetch_depth` batches ahead, pinned on a GPU so that the copy to it does not wait."""
        return {"prefetch": self.prefetch_depth(device), "pin_memory": torch.device(device).type == "cuda"}

    @property
    def sparse_optimizer_name(self) -> str:
        return self.sparse_optimizer or self.optimizer

    def weights_for(self, heads: Iterable[str]) -> list[float]:
        heads = list(heads)
        unknown = set(self.head_weights) - set(heads)
        if unknown:
            raise ValueError(f"head_weights names unknown heads {sorted(unknown)}; heads: {heads}")
        return [float(self.head_weights.get(h, 1.0)) for h in heads]


# ---------------------------------------------------------------------------------------------
# Model helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def unwrap(model: nn.Module) -> nn.Module:
    """The DLRM inside a DistributedModelParallel (or the model itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "head_names") else model


def head_names(model: nn.Module) -> tuple[str, ...]:
    inner = unwrap(model)
    return tuple(getattr(inner, "head_names", HEADS))


# ---------------------------------------------------------------------------------------------
# Loss, epoch, evaluation


def multi_head_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: list[float] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted total, per-head mean BCE [n_heads]) for logits/labels [B, n_heads]."""
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} vs labels {tuple(labels.shape)}")
    per_head = F.binary_cross_entropy_with_logits(
        logits, labels.to(logits.dtype), reduction="none"
    ).mean(dim=0)
    w = torch.as_tensor(weights, dtype=per_head.dtype, device=per_head.device)
    return (per_head * w).sum(), per_head


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: Any,
    config: TrainConfig,
    *,
    epoch: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """One pass over `batches`. Returns loss (weighted), loss_<head>, samples, samples_per_s, seconds
    and input_seconds: of the seconds, those spent waiting for the next batch (reading and
    encoding in line, or a prefetch queue running dry): how input-bound the epoch was.

    device: where the model is; each batch is copied there (`non_blocking`, so a batch in
    pinned host memory overlaps its copy) and the loss sums stay there, read once at the end.
    On the CPU (the default) nothing is copied.
    Raises FloatingPointError naming the head, epoch and step when a loss is NaN or infinite.
    """
    heads = head_names(model)
    # a model may bring its own loss (the two-tower's in-batch softmax), else one BCE per head
    loss_fn = getattr(unwrap(model), "batch_loss", None)
    device = torch.device(device)
    # on the device once: a tensor built from a list every step is a blocking copy to a GPU
    weights = torch.tensor([1.0] * len(heads) if loss_fn else config.weights_for(heads), device=device)
    loss_fn = loss_fn or multi_head_loss
    model.train()
    sums = torch.zeros(len(heads), dtype=torch.float64, device=device)
    total_sum = torch.zeros((), dtype=torch.float64, device=device)
    samples, steps, waited = 0, 0, 0.0
    start = time.perf_counter()
    source = iter(batches)
    for step in itertools.count():
        asked = time.perf_counter()
        batch = next(source, None)
        waited += time.perf_counter() - asked
        if batch is None:
            break
        batch = _batch_to(batch, device)
        logits = model(batch.dense, batch.sparse)
        if len(batch) == 0:  # a sharded rank out of batches (`ml.sharded.in_lockstep`): it
            # joins the all-to-alls and the gradient all-reduce with zero gradients
            total, per_head = logits.sum() * 0.0, torch.zeros(len(heads), device=device)
        else:
            total, per_head = loss_fn(logits, batch.labels, weights)
        per_head_d = per_head.detach()
        if not torch.isfinite(per_head_d).all():
            bad = [h for h, v in zip(heads, per_head_d.tolist()) if not math.isfinite(v)]
            raise FloatingPointError(
                f"non-finite loss for head {bad[0]!r} (all bad: {bad}) at epoch {epoch}, step {step}"
            )
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        n = len(batch)
        sums += per_head_d.double() * n
        total_sum += total.detach().double() * n
        samples += n
        steps += n > 0
    seconds = time.perf_counter() - start
    denom = max(samples, 1)
    metrics: dict[str, float] = {"loss": float(total_sum) / denom}
    metrics.update({f"loss_{h}": float(s) / denom for h, s in zip(heads, sums.tolist())})
    metrics.update(
        samples=float(samples),
        steps=float(steps),
        seconds=seconds,
        samples_per_s=samples / seconds if seconds > 0 else 0.0,
        input_seconds=waited,
    )
    return metrics


def input_wait_share(epochs: Sequence[Mapping[str, float]]) -> float:
    """Of the epochs' time (`train_epoch`'s metrics), the share spent waiting for batches: near 1
    is input-bound. An epoch without `input_seconds` (a checkpoint from before it was counted)
    counts as none waited; no time at all gives 0."""
    seconds = sum(e.get("seconds", 0.0) for e in epochs)
    return sum(e.get("input_seconds", 0.0) for e in epochs) / seconds if seconds > 0 else 0.0


def _batch_to(batch: Batch, device: torch.device) -> Batch:
    """The batch on `device` (itself when already there)."""
    if batch.dense.device == device and batch.sparse.device == device and batch.labels.device == device:
        return batch
    return Batch(batch.dense.to(device, non_blocking=True), batch.sparse.to(device, non_blocking=True),
                 batch.labels.to(device, non_blocking=True))


@torch.no_grad()
def evaluate_logloss(
    model: nn.Module, batches: Iterable[Batch], *, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """logloss_<head> and auc_<head> over all batches, plus logloss (mean over heads), samples.

    device: where the model is; batches are copied there (see `train_epoch`)."""
    heads = head_names(model)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    try:
        for batch in batches:
            batch = _batch_to(batch, device)
            all_logits.append(model(batch.dense, batch.sparse).float().cpu())
            # a model of fewer heads (the two-tower's one) has the labels' first ones
            all_labels.append(batch.labels[:, :len(heads)].float().cpu())
    finally:
        model.train(was_training)
    if not all_logits:
        return {"samples": 0.0}
    return logloss_metrics(torch.cat(all_logits), torch.cat(all_labels), heads)


def logloss_metrics(logits: torch.Tensor, labels: torch.Tensor,
                    heads: tuple[str, ...]) -> dict[str, float]:
    """`evaluate_logloss`'s metrics of scores [N, heads] and labels [N, heads] (CPU floats)."""
    if len(labels) == 0:
        return {"samples": 0.0}
    per_head = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=0)
    out: dict[str, float] = {"samples": float(len(labels)), "logloss": float(per_head.mean())}
    scores, y = logits.numpy(), labels.numpy()
    for i, h in enumerate(heads):
        out[f"logloss_{h}"] = float(per_head[i])
        out[f"auc_{h}"] = roc_auc(y[:, i], scores[:, i])
    return out


__all__ = [
    "TrainConfig", "evaluate_logloss", "head_names", "input_wait_share", "logloss_metrics",
    "multi_head_loss", "seed_everything", "train_epoch", "unwrap",
]
