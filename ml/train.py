"""Single-process training of the multi-head DLRM: loss, epoch loop, evaluation, checkpoints.

No Ray and no orchestration here; a Ray Train wrapper and the Dagster assets call these pieces.

Typical use::

    model = build_model(model_config, backend="torchrec")
    history = fit(model, lambda: iter_batches(...), TrainConfig(epochs=3),
                  on_epoch_end=lambda epoch, metrics, model: ...)

`fit` builds the optimizer itself (`setup_training`); to resume, build it yourself::

    model, optimizer = setup_training(model, config)
    epoch = load_checkpoint(path, model, optimizer)
    fit(model, batches_fn, config, optimizer=optimizer, start_epoch=epoch + 1)

With `TrainConfig(fused=True)` and a `TorchRecDLRM`, `setup_training` wraps the model in TorchRec's
`DistributedModelParallel` on a gloo process group (world size 1 when none exists yet): every table
is placed table-wise with the fused FBGEMM kernel and its optimizer runs inside backward; the
other parameters get an ordinary optimizer (the in-backward ones filtered out, see STACK.md).
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.batch import HEADS, Batch

OPTIMIZERS = ("adam", "adagrad")


def _default_head_weights() -> dict[str, float]:
    return {"take": 1.0, "complete": 0.5, "music_like": 0.5}


@dataclass(kw_only=True)
class TrainConfig:
    """Training hyper-parameters.

    lr: learning rate of the dense parameters (and of the embeddings unless sparse_lr is set).
    batch_size: for the code that produces the batches (train_epoch consumes whatever it gets).
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
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError("epochs >= 0, lr > 0 and batch_size >= 1 are required")
        if any(w < 0 for w in self.head_weights.values()):
            raise ValueError(f"head weights must be >= 0: {self.head_weights}")

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


def _is_embedding_param(name: str) -> bool:
    return "sparse_arch." in name


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with ordinary tensors (ShardedTensor of a world-size-1 DMP made whole).

    The keys are those of the unwrapped model, so either backend can load the result.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        key = key.removeprefix("module.")
        if hasattr(value, "local_shards"):  # torch.distributed ShardedTensor
            value = _gather_sharded(value)
        out[key] = value.detach().clone()
    return out


def _gather_sharded(value: Any) -> torch.Tensor:
    full = torch.empty(tuple(value.size()), dtype=value.dtype)
    covered = 0
    for shard in value.local_shards():
        offsets = shard.metadata.shard_offsets
        sizes = shard.metadata.shard_sizes
        index = tuple(slice(o, o + s) for o, s in zip(offsets, sizes))
        full[index] = shard.tensor.detach().cpu()
        covered += math.prod(sizes)
    if covered != full.numel():
        raise RuntimeError("sharded tensor is not fully local; gather it on every rank first")
    return full


# ---------------------------------------------------------------------------------------------
# Optimizers and the fused (DistributedModelParallel) path


def _optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    return {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[name]


class MultiOptimizer:
    """Steps several torch optimizers as one (dense and sparse with different algorithms)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError("optimizer state does not match this MultiOptimizer")
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)


def make_optimizer(model: nn.Module, config: TrainConfig) -> Any:
    """Plain PyTorch optimizer(s): weight decay on dense parameters, none on embeddings.

    One torch optimizer with two parameter groups, or a `MultiOptimizer` when the sparse
    optimizer differs from the dense one.
    """
    dense, sparse = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (sparse if _is_embedding_param(name) else dense).append(p)
    dense_group = {"params": dense, "weight_decay": config.weight_decay}
    sparse_group = {"params": sparse, "weight_decay": 0.0, "lr": config.sparse_lr or config.lr}
    dense_cls = _optimizer_class(config.optimizer)
    sparse_cls = _optimizer_class(config.sparse_optimizer_name)
    if sparse_cls is dense_cls or not sparse:
        return dense_cls(
            [dense_group, sparse_group] if sparse else [dense_group], lr=config.lr, foreach=True
        )
    return MultiOptimizer(
        [
            dense_cls([dense_group], lr=config.lr, foreach=True),
            sparse_cls([sparse_group], lr=config.lr, foreach=True),
        ]
    )


def _ensure_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    store_file = tempfile.NamedTemporaryFile(prefix="dlrm_gloo_", delete=False)
    store_file.close()
    os.unlink(store_file.name)
    dist.init_process_group(
        "gloo", init_method=f"file://{store_file.name}", rank=0, world_size=1
    )


def prepare_fused(model: nn.Module, config: TrainConfig) -> tuple[nn.Module, Any]:
    """Wrap a TorchRecDLRM in DistributedModelParallel with the fused FBGEMM CPU kernel.

    Returns (dmp_model, optimizer). The embedding optimizer runs inside backward; the returned
    `CombinedOptimizer` steps the dense parameters and carries the fused optimizer's state for
    checkpoints. The wrapped model's current weights are kept.
    """
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import (
        EmbeddingShardingPlanner,
        ParameterConstraints,
        Topology,
    )
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from ml.model import TorchRecDLRM

    if not isinstance(model, TorchRecDLRM):
        raise TypeError(f"fused training needs a TorchRecDLRM, got {type(model).__name__}")
    _ensure_process_group()
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ebc = model.sparse_arch.embedding_bag_collection
    sparse_kwargs: dict[str, Any] = {"lr": config.sparse_lr or config.lr}
    apply_optimizer_in_backward(
        _optimizer_class(config.sparse_optimizer_name), ebc.parameters(), sparse_kwargs
    )

    world = dist.get_world_size()
    constraints = {
        table: ParameterConstraints(sharding_types=["table_wise"], compute_kernels=["fused"])
        for table in model.config.table_names()
    }
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=world, compute_device="cpu"), constraints=constraints
    )
    sharders = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(
        model,
        device=torch.device("cpu"),
        plan=plan,
        sharders=sharders,
        init_data_parallel=world > 1,  # DDP over one rank only adds hooks and copies
    )
    dmp.load_state_dict(weights)  # sharding re-initialises the tables

    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    opt_cls = _optimizer_class(config.optimizer)
    dense_opt = KeyedOptimizerWrapper(
        dense_params,
        lambda params: opt_cls(
            params, lr=config.lr, weight_decay=config.weight_decay, foreach=True
        ),
    )
    return dmp, CombinedOptimizer([dmp.fused_optimizer, dense_opt])


def setup_training(model: nn.Module, config: TrainConfig) -> tuple[nn.Module, Any]:
    """(model to train, optimizer): the fused DMP path when config.fused, else plain PyTorch."""
    if config.fused:
        return prepare_fused(model, config)
    return model, make_optimizer(model, config)


# ---------------------------------------------------------------------------------------------
# Loss, epoch, evaluation


def multi_head_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted total, per-head mean BCE [n_heads]) for logits/labels [B, n_heads]."""
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} vs labels {tuple(labels.shape)}")
    per_head = F.binary_cross_entropy_with_logits(
        logits, labels.to(logits.dtype), reduction="none"
    ).mean(dim=0)
    w = torch.tensor(weights, dtype=per_head.dtype, device=per_head.device)
    return (per_head * w).sum(), per_head


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: Any,
    config: TrainConfig,
    *,
    epoch: int = 0,
) -> dict[str, float]:
    """One pass over `batches`. Returns loss (weighted), loss_<head>, samples, samples_per_s, seconds.

    Raises FloatingPointError naming the head, epoch and step when a loss is NaN or infinite.
    """
    heads = head_names(model)
    weights = config.weights_for(heads)
    model.train()
    sums = torch.zeros(len(heads), dtype=torch.float64)
    total_sum, samples, step = 0.0, 0, -1
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        logits = model(batch.dense, batch.sparse)
        total, per_head = multi_head_loss(logits, batch.labels, weights)
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
        total_sum += float(total.detach()) * n
        samples += n
    seconds = time.perf_counter() - start
    denom = max(samples, 1)
    metrics: dict[str, float] = {"loss": total_sum / denom}
    metrics.update({f"loss_{h}": float(s) / denom for h, s in zip(heads, sums)})
    metrics.update(
        samples=float(samples),
        steps=float(step + 1),
        seconds=seconds,
        samples_per_s=samples / seconds if seconds > 0 else 0.0,
    )
    return metrics


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Rank-based (Mann-Whitney) AUC with tied scores averaged; NaN when only one class."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # average rank (1-based) within each run of equal scores
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@torch.no_grad()
def evaluate_logloss(model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
    """logloss_<head> and auc_<head> over all batches, plus logloss (mean over heads), samples."""
    heads = head_names(model)
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    try:
        for batch in batches:
            all_logits.append(model(batch.dense, batch.sparse).float().cpu())
            all_labels.append(batch.labels.float().cpu())
    finally:
        model.train(was_training)
    if not all_logits:
        return {"samples": 0.0}
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    per_head = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=0)
    out: dict[str, float] = {"samples": float(len(labels)), "logloss": float(per_head.mean())}
    scores, y = logits.numpy(), labels.numpy()
    for i, h in enumerate(heads):
        out[f"logloss_{h}"] = float(per_head[i])
        out[f"auc_{h}"] = roc_auc(y[:, i], scores[:, i])
    return out


def fit(
    model: nn.Module,
    train_batches_fn: Callable[[], Iterable[Batch]],
    config: TrainConfig,
    *,
    on_epoch_end: Callable[[int, dict[str, float], nn.Module], None] | None = None,
    optimizer: Any = None,
    start_epoch: int = 0,
) -> list[dict[str, float]]:
    """Train epochs start_epoch .. config.epochs-1; returns each epoch's train metrics.

    Without `optimizer`, seeds and calls `setup_training` (with fused=True the model is wrapped
    in DistributedModelParallel; `on_epoch_end` then receives the wrapped model). With one, the
    model is used as given (already set up, e.g. after `load_checkpoint`).
    `on_epoch_end(epoch, metrics, model)` is where checkpointing and MLflow logging hook in.
    """
    if optimizer is None:
        seed_everything(config.seed)
        model, optimizer = setup_training(model, config)
    history = []
    for epoch in range(start_epoch, config.epochs):
        metrics = train_epoch(model, train_batches_fn(), optimizer, config, epoch=epoch)
        metrics["epoch"] = float(epoch)
        history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, model)
    return history


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: Any, epoch: int) -> Path:
    """torch.save {model, optimizer, epoch}; written to a temp file then renamed (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": plain_state_dict(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: Any = None) -> int:
    """Restore model (and optimizer, when given) in place; returns the saved epoch."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    restore_optimizer = optimizer is not None and payload.get("optimizer") is not None
    if restore_optimizer:
        _init_keyed_optimizer_state(optimizer)  # before the weights: it takes a zero-grad step
    model.load_state_dict(payload["model"])
    if restore_optimizer:
        optimizer.load_state_dict(payload["optimizer"])
    return int(payload["epoch"])


def _init_keyed_optimizer_state(optimizer: Any) -> None:
    """TorchRec's KeyedOptimizer loads state only into initialised state: initialise lazy parts.

    A CombinedOptimizer from `prepare_fused` holds the fused (already initialised) embedding
    optimizer and a KeyedOptimizerWrapper whose state is empty until its first step.
    """
    if not hasattr(optimizer, "init_state"):
        return  # plain torch optimizers load into empty state
    subs = getattr(optimizer, "optimizers", None)
    parts = [o for _, o in subs] if isinstance(subs, list) else [optimizer]
    for part in parts:
        if hasattr(part, "init_state") and len(part.state) == 0 and len(part.params) > 0:
            part.init_state()
            part.zero_grad(set_to_none=True)
