"""Model-parallel training across ranks: the steps that differ when the tables are sharded.

With `DistributedModelParallel` over more than one rank (`ml.optim.prepare_fused` in a process
group of world size > 1, e.g. Ray Train workers) each table lives on one rank (table-wise), so:

* every forward and backward is an all-to-all that every rank must join: the ranks take the same
  number of steps (`in_lockstep`: a rank out of batches runs empty ones, which `train_epoch`
  counts as nothing), and validation runs on every rank, each on its share of the batches
  (`evaluate_sharded`: the scores gathered, then the metrics of `ml.train.logloss_metrics`);
* the weights are not whole on any rank: `gather_weights` assembles the plain state dict on rank
  0 (a collective), which `ml.checkpoint` saves as `model.pt` for the driver and the scorer;
* the model and the fused optimizer state are saved and restored sharded with
  `torch.distributed.checkpoint` (DCP) under `<checkpoint>/sharded/`: each rank writes its own
  shard files (into a shared directory, or into its own directory when Ray Train merges the
  ranks' uploads into one checkpoint) and rank 0 the `.metadata`, written last.

An empty training step still all-reduces the dense gradients (DDP inside DMP, averaged over the
world size): the rank that ran out contributes zeros, and every rank takes the same optimizer
step, so the dense replicas stay equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ml.batch import HEADS, Batch
from ml.checkpoint import (CheckpointInfo, init_optimizer_state, load_checkpoint, read_info,
                           save_checkpoint)
from ml.model import ModelConfig
from ml.train import head_names, logloss_metrics

SHARDED_DIR = "sharded"  # DCP's files inside a checkpoint directory


def is_sharded(model: nn.Module) -> bool:
    """True when some parameter of `model` is split across ranks (DMP over world size > 1)."""
    import torch.distributed as dist

    return (dist.is_initialized() and dist.get_world_size() > 1
            and hasattr(model, "fused_optimizer"))


def empty_batch(config: ModelConfig) -> Batch:
    """A batch of no rows, shaped as `config`'s batches: the step of a rank out of batches."""
    return Batch(torch.zeros(0, config.n_dense),
                 torch.zeros(0, sum(config.sparse_slots or ()), dtype=torch.int64),
                 torch.zeros(0, len(HEADS)))


def in_lockstep(batches: Iterable[Batch], empty: Batch) -> Iterator[Batch]:
    """`batches`, then `empty` until every rank has run out: all ranks take as many steps.

    One all-reduce of a flag per step (a collective: every rank iterates its own `batches`).
    """
    import torch.distributed as dist

    it = iter(batches)
    while True:
        batch = next(it, None)
        more = torch.tensor([0 if batch is None else 1])
        dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if int(more) == 0:
            return
        yield empty if batch is None else batch


@torch.no_grad()
def evaluate_sharded(model: nn.Module, batches: Iterable[Batch], empty: Batch,
                     *, device: torch.device | str = "cpu") -> dict[str, float]:
    """`ml.train.evaluate_logloss` on every rank: rank r scores batches r, r + world, ... and
    every rank gets the metrics of all the scores (a collective)."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    heads = head_names(model)
    device = torch.device(device)
    mine = (b for i, b in enumerate(batches) if i % world == rank)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in in_lockstep(mine, empty):
            logits.append(model(batch.dense.to(device), batch.sparse.to(device)).float().cpu())
            labels.append(batch.labels[:, :len(heads)].float().cpu())
    finally:
        model.train(was_training)
    every: list[Any] = [None] * world
    dist.all_gather_object(every, (torch.cat(logits), torch.cat(labels)))
    return logloss_metrics(torch.cat([lg for lg, _ in every]), torch.cat([lb for _, lb in every]),
                           heads)


def gather_weights(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The plain weights (`ml.checkpoint.plain_state_dict`'s keys and tensors) on rank 0, None on
    the other ranks: each sharded table is gathered to rank 0 (a collective)."""
    import torch.distributed as dist

    rank = dist.get_rank()
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if hasattr(value, "local_shards"):  # a ShardedTensor
            full = torch.empty(tuple(value.size()), dtype=value.dtype) if rank == 0 else None
            value.gather(dst=0, out=full)
            value = full
        if rank == 0:
            out[key.removeprefix("module.")] = value.detach().cpu().clone()
    return out if rank == 0 else None


def save_sharded_checkpoint(directory: str | Path, model: nn.Module, optimizer: Any, epoch: int,
                            *, history: list[dict[str, float]] = (), **meta: Any) -> Path:
    """The checkpoint of `epoch` (a collective): rank 0 writes `ml.checkpoint`'s plain files
    (gathered weights, checkpoint.json; no optimizer.pt), then every rank its DCP shards of the
    model and the optimizer under `<directory>/sharded/`."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    directory = Path(directory)
    weights = gather_weights(model)
    if weights is not None:
        save_checkpoint(directory, None, None, epoch, history=history, weights=weights, **meta)
    dist.barrier()  # rank 0 replaced the directory: the shards go into the new one
    (directory / SHARDED_DIR).mkdir(parents=True, exist_ok=True)
    dcp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()},
             checkpoint_id=str(directory / SHARDED_DIR))
    return directory


def has_sharded_state(directory: str | Path) -> bool:
    """True when `directory` holds a complete DCP save (its `.metadata` is written last)."""
    return (Path(directory) / SHARDED_DIR / ".metadata").is_file()


def load_sharded_checkpoint(directory: str | Path, model: nn.Module, optimizer: Any) -> CheckpointInfo:
    """Restore a `save_sharded_checkpoint` of the same layout (same world size and plan): each
    rank reads its shards of the weights and of the optimizer state (a collective)."""
    import torch.distributed.checkpoint as dcp

    init_optimizer_state(optimizer)  # DCP loads into existing state only
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    dcp.load(state, checkpoint_id=str(Path(directory) / SHARDED_DIR))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return read_info(directory)


def save(directory: str | Path, model: nn.Module, optimizer: Any, epoch: int,
         *, history: list[dict[str, float]] = (), **meta: Any) -> Path:
    """`ml.checkpoint.save_checkpoint`, or `save_sharded_checkpoint` (on every rank) for a model
    sharded across ranks."""
    write = save_sharded_checkpoint if is_sharded(model) else save_checkpoint
    return write(directory, model, optimizer, epoch, history=history, **meta)


def restore(directory: str | Path, model: nn.Module, optimizer: Any = None) -> CheckpointInfo:
    """`ml.checkpoint.load_checkpoint` for any model: a sharded one of the checkpoint's own layout
    (the caller's to know: e.g. the strategy in checkpoint.json) takes the sharded weights and
    optimizer state; otherwise the plain weights load into any layout, and an optimizer.pt only
    into an unsharded model (a sharded one then starts a fresh optimizer)."""
    sharded = is_sharded(model)
    if sharded and optimizer is not None and has_sharded_state(directory):
        return load_sharded_checkpoint(directory, model, optimizer)
    return load_checkpoint(directory, model, None if sharded else optimizer)


__all__ = [
    "SHARDED_DIR", "empty_batch", "evaluate_sharded", "gather_weights", "has_sharded_state",
    "in_lockstep", "is_sharded", "load_sharded_checkpoint", "restore", "save",
    "save_sharded_checkpoint",
]
