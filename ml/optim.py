"""Optimizers for the DLRM: plain PyTorch, or TorchRec's fused FBGEMM kernel in backward.

`setup_training(model, config)` returns (model to train, optimizer): with `TrainConfig(fused=True)`
and a `TorchRecDLRM` the model is wrapped in TorchRec's `DistributedModelParallel` on a gloo
process group (world size 1 when none exists yet): every table is placed table-wise with the
fused FBGEMM kernel and its optimizer runs inside backward; the other parameters get an ordinary
optimizer (the in-backward ones filtered out, see docs/stack.md). Otherwise one plain torch optimizer
(or a `MultiOptimizer` when the embeddings use another algorithm than the dense parameters).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from torch import nn

from ml.train import TrainConfig


def _is_embedding_param(name: str) -> bool:
    return "sparse_arch." in name



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
    """Wrap a TorchRec-backed model (the DLRM, the two-tower) in DistributedModelParallel with the fused FBGEMM CPU kernel.

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

    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    if not isinstance(getattr(getattr(model, "sparse_arch", None), "embedding_bag_collection", None),
                      EmbeddingBagCollection):
        raise TypeError("fused training needs the TorchRec backend (sparse_arch."
                        f"embedding_bag_collection an EmbeddingBagCollection), got {type(model).__name__}")
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


__all__ = ["MultiOptimizer", "make_optimizer", "prepare_fused", "setup_training"]
