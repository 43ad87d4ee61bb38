"""The one checkpoint format: a directory written after an epoch, read to resume or to score.

    <directory>/model.pt         plain weights (`plain_state_dict`): ordinary tensors with the
                                 unwrapped model's keys, so either backend loads them and
                                 `torch.load(weights_only=True)` reads them without a process group
                                 (gathered on rank 0 when the tables are sharded across ranks)
    <directory>/optimizer.pt     the optimizer's state_dict (absent when saved without one); the
                                 fused path's holds ShardedTensors, which unpickle only inside a
                                 process group, hence a file of its own
    <directory>/sharded/         model and optimizer state of a model sharded across ranks, in
                                 `torch.distributed.checkpoint` files (`ml.sharded`; then no
                                 optimizer.pt)
    <directory>/checkpoint.json  {"epoch": last finished epoch, "history": one metrics dict per
                                 epoch so far, ...}: whatever else the writer adds (Ray adds the
                                 optimizer layout it trained with, see `ml.ray_training`)

`ml.training_job.run_training` resumes from such a directory (`resume_from=`), `checkpoint_hook`
writes one after every epoch, and the Ray Train workers report one per epoch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
META_FILE = "checkpoint.json"


@dataclass
class CheckpointInfo:
    epoch: int  # the last finished epoch
    history: list[dict[str, float]] = field(default_factory=list)  # epochs 0..epoch
    meta: dict[str, Any] = field(default_factory=dict)  # what the writer added


def plain(value: Any) -> Any:
    """A tensor as an ordinary CPU tensor (a fully local ShardedTensor made whole); anything
    else as it is."""
    if hasattr(value, "local_shards"):  # torch.distributed ShardedTensor
        return _gather_sharded(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return value


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with ordinary CPU tensors (ShardedTensor of a world-size-1 DMP made whole).

    The keys are those of the unwrapped model, so either backend can load the result.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        out[key.removeprefix("module.")] = plain(value).clone()
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


def save_checkpoint(directory: str | Path, model: nn.Module | None, optimizer: Any, epoch: int, *,
                    history: list[dict[str, float]] = (),
                    weights: dict[str, torch.Tensor] | None = None, **meta: Any) -> Path:
    """Write the checkpoint of `epoch` to `directory`, replacing an earlier checkpoint there (a
    directory that is neither empty nor a checkpoint is refused: FileExistsError).

    weights: the plain weights when already made (`ml.sharded.gather_weights`), else
    `plain_state_dict(model)`. optimizer None: no optimizer.pt (`ml.sharded` saves it sharded).

    The files are written to a fresh sibling directory first, which then takes the place of the
    old one: a crash leaves either the old checkpoint or the new one, never a mix.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    torch.save(plain_state_dict(model) if weights is None else weights, tmp / WEIGHTS_FILE)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    info = {**meta, "epoch": int(epoch), "history": list(history)}
    (tmp / META_FILE).write_text(json.dumps(info))
    _replace_dir(tmp, directory)
    return directory


def copy_checkpoint(src: str | Path, dst: str | Path, **meta: Any) -> Path:
    """`src` written again to `dst` (replacing it), with `meta` updated in its checkpoint.json."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    shutil.copytree(src, tmp)
    info = json.loads((tmp / META_FILE).read_text())
    (tmp / META_FILE).write_text(json.dumps({**info, **meta}))
    _replace_dir(tmp, dst)
    return dst


def _replace_dir(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        if any(target.iterdir()) and not (target / META_FILE).is_file():
            shutil.rmtree(new, ignore_errors=True)
            raise FileExistsError(f"{target} is neither empty nor a checkpoint: not replaced")
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_info(directory: str | Path) -> CheckpointInfo:
    """Epoch, history and the writer's additions; FileNotFoundError when it is no checkpoint."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a checkpoint (no {META_FILE}): {directory}")
    info = json.loads(path.read_text())
    epoch, history = int(info.pop("epoch")), list(info.pop("history", []))
    return CheckpointInfo(epoch=epoch, history=history, meta=info)


def read_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The plain weights, without a process group (what a driver or a scorer needs)."""
    return torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)


def load_checkpoint(directory: str | Path, model: nn.Module, optimizer: Any = None) -> CheckpointInfo:
    """Restore the weights (and the optimizer state, when `optimizer` is given and the checkpoint
    has one) in place; returns the checkpoint's epoch, history and additions."""
    directory = Path(directory)
    info = read_info(directory)
    restore_optimizer = optimizer is not None and (directory / OPTIMIZER_FILE).is_file()
    if restore_optimizer:
        init_optimizer_state(optimizer)  # before the weights: it takes a zero-grad step
    model.load_state_dict(read_weights(directory))
    if restore_optimizer:
        optimizer.load_state_dict(
            torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=False))
    return info


def init_optimizer_state(optimizer: Any) -> None:
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


__all__ = [
    "CheckpointInfo", "copy_checkpoint", "init_optimizer_state", "load_checkpoint", "plain",
    "plain_state_dict",
    "read_info", "read_weights", "save_checkpoint",
]
