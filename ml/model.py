"""The context-aware multi-head DLRM, in two interchangeable backends.

* `TorchRecDLRM`: sparse features go through a TorchRec `EmbeddingBagCollection`
  (`sparse_arch.embedding_bag_collection`, like `torchrec.models.dlrm.DLRM`), so the model can be
  sharded later with `DistributedModelParallel` (see `ml.optim.prepare_fused`).
* `ReferenceDLRM`: the same architecture in plain PyTorch, one `nn.EmbeddingBag` per feature. It
  never imports torchrec (importing torchrec takes ~2.4 s), and its `state_dict` has the same keys
  as the TorchRec model's, so weights and checkpoints move between the two unchanged.

Both: `forward(dense [B, n_dense] float32, sparse [B, n_slots] int64) -> logits [B, n_heads]`
(one column per sparse feature, k for a multi-hot bag of k slots: `ModelConfig.sparse_slots`).

Architecture (DLRM): bottom MLP on dense -> [B, D]; one embedding per sparse feature -> [B, F, D];
interaction ("dot": the dense vector plus the pairwise dot products of all F+1 vectors, as in
TorchRec's `InteractionArch`; "dcn": a small full-rank cross network over the concatenation);
a shared top MLP; one linear head per task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from ml.batch import HEADS

if TYPE_CHECKING:  # pragma: no cover
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

BACKENDS = ("torchrec", "reference")
INTERACTIONS = ("dot", "dcn")
ARCHITECTURES = ("dlrm", "two_tower")


@dataclass
class ModelConfig:
    """Shape of the DLRM.

    sparse_cardinalities: vocabulary size per sparse feature, id 0 = out-of-vocabulary bucket
        (so a feature with k known values has cardinality k + 1).
    n_dense: number of dense features.
    embedding_dim: D, shared by every table and by the bottom MLP's output.
    bottom_mlp: layer sizes of the dense MLP; the last must equal `embedding_dim`.
    top_mlp: hidden layer sizes of the shared top MLP (may be empty).
    heads: task names, one logit each, in this order.
    interaction: "dot" (DLRM pairwise dot products) or "dcn" (cross network).
    dcn_layers: number of cross layers when interaction == "dcn".
    dropout: dropout after each hidden top-MLP layer.
    sparse_names: feature names (KJT keys); default f0, f1, ...
    sparse_slots: columns of `sparse` per feature (default 1 each): a feature of k > 1 slots is
        a multi-hot bag (ids, -1 in unused slots) whose embeddings are mean-pooled.
    """

    sparse_cardinalities: list[int]
    n_dense: int
    embedding_dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [64, 16])
    top_mlp: list[int] = field(default_factory=lambda: [64, 32])
    heads: tuple[str, ...] = HEADS
    interaction: str = "dot"
    dcn_layers: int = 2
    dropout: float = 0.0
    sparse_names: list[str] | None = None
    sparse_slots: list[int] | None = None
    # "dlrm", or "two_tower" (`ml.two_tower`: the retrieval model on the same inputs; it reads
    # tower (hidden sizes, then the vector's), temperature and dense_names, not the MLPs above)
    architecture: str = "dlrm"
    tower: list[int] = field(default_factory=lambda: [128, 64])
    temperature: float = 0.05
    dense_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.sparse_cardinalities = [int(c) for c in self.sparse_cardinalities]
        self.heads = tuple(self.heads)
        if not self.sparse_cardinalities:
            raise ValueError("ModelConfig needs at least one sparse feature")
        if any(c < 1 for c in self.sparse_cardinalities):
            raise ValueError(f"every cardinality must be >= 1: {self.sparse_cardinalities}")
        if self.n_dense < 1:
            raise ValueError("ModelConfig needs at least one dense feature")
        if not self.bottom_mlp or self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(
                f"bottom_mlp {self.bottom_mlp} must end in embedding_dim={self.embedding_dim}"
            )
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}, got {self.interaction!r}")
        if not self.heads:
            raise ValueError("ModelConfig needs at least one head")
        if self.sparse_names is None:
            self.sparse_names = [f"f{i}" for i in range(len(self.sparse_cardinalities))]
        if len(self.sparse_names) != len(self.sparse_cardinalities):
            raise ValueError("sparse_names and sparse_cardinalities differ in length")
        if len(set(self.sparse_names)) != len(self.sparse_names):
            raise ValueError("sparse_names must be unique")
        if self.sparse_slots is None:
            self.sparse_slots = [1] * len(self.sparse_cardinalities)
        self.sparse_slots = [int(k) for k in self.sparse_slots]
        if len(self.sparse_slots) != len(self.sparse_cardinalities) or min(self.sparse_slots) < 1:
            raise ValueError(f"sparse_slots {self.sparse_slots} must give >= 1 slot per sparse feature")

    @property
    def n_sparse(self) -> int:
        return len(self.sparse_cardinalities)

    def table_names(self) -> list[str]:
        return [f"t_{name}" for name in self.sparse_names]  # type: ignore[union-attr]



def slot_columns(slots: Sequence[int]) -> list[tuple[int, int]]:
    """(first column, slots) of each sparse feature in `Batch.sparse`: a bag of k slots takes k
    columns, every other feature one."""
    starts = [sum(slots[:i]) for i in range(len(slots))]
    return list(zip(starts, slots))


def to_kjt(sparse: torch.Tensor, keys: Sequence[str],
           slots: Sequence[int] | None = None) -> "KeyedJaggedTensor":
    """[B, sum(slots)] int64 ids -> a KeyedJaggedTensor: a one-slot feature has length 1 per
    row, a bag (k slots) the number of its slots that hold an id (>= 0).

    KJT values are key-major: all of feature 0's ids for the batch, then feature 1's, ...
    """
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    slots = [1] * len(keys) if slots is None else list(slots)
    if sparse.dim() != 2 or sparse.shape[1] != sum(slots):
        raise ValueError(f"sparse must be [B, {sum(slots)}], got {tuple(sparse.shape)}")
    if max(slots) == 1:  # the common case, without masks
        values = sparse.t().reshape(-1).long()
        lengths = torch.ones(values.numel(), dtype=torch.int32, device=sparse.device)
        return KeyedJaggedTensor(keys=list(keys), values=values, lengths=lengths)
    values, lengths = [], []
    for start, k in slot_columns(slots):
        ids = sparse[:, start:start + k]
        held = ids >= 0
        values.append(ids[held].long())  # row-major: each row's values in slot order
        lengths.append(held.sum(dim=1).to(torch.int32))
    return KeyedJaggedTensor(keys=list(keys), values=torch.cat(values), lengths=torch.cat(lengths))


# ---------------------------------------------------------------------------------------------
# Plain-PyTorch parts shared by both backends (so equal weights give equal logits).


def _mlp(in_features: int, sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_features, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = size
    return nn.Sequential(*layers)


class DotInteraction(nn.Module):
    """Dense vector + upper-triangle pairwise dot products of [dense, sparse_1..F]."""

    def __init__(self, num_sparse_features: int) -> None:
        super().__init__()
        self.F = num_sparse_features
        triu = torch.triu_indices(self.F + 1, self.F + 1, offset=1)
        # flat positions in the [F+1, F+1] matrix: index_select's backward (index_add) is ~2-3x
        # faster on CPU than the 2-D advanced indexing TorchRec uses (index_put accumulate)
        self.register_buffer("triu_flat", triu[0] * (self.F + 1) + triu[1], persistent=False)

    @staticmethod
    def out_features(num_sparse_features: int, dim: int) -> int:
        return dim + (num_sparse_features + 1) * num_sparse_features // 2

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        combined = torch.cat((dense.unsqueeze(1), sparse), dim=1)  # [B, F+1, D]
        inter = torch.bmm(combined, combined.transpose(1, 2))
        flat = inter.flatten(1).index_select(1, self.triu_flat)
        return torch.cat((dense, flat), dim=1)


class CrossInteraction(nn.Module):
    """DCN-v2 style full-rank cross network: x_{l+1} = x0 * (W_l x_l + b_l) + x_l."""

    def __init__(self, num_sparse_features: int, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        width = (num_sparse_features + 1) * dim
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(num_layers))

    @staticmethod
    def out_features(num_sparse_features: int, dim: int) -> int:
        return (num_sparse_features + 1) * dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat((dense.unsqueeze(1), sparse), dim=1).flatten(1)
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class _DLRMBase(nn.Module):
    """Everything but the embedding lookup; subclasses define `sparse_arch` and `embed()`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        F, D = config.n_sparse, config.embedding_dim
        self.dense_arch = _mlp(config.n_dense, config.bottom_mlp)
        if config.interaction == "dot":
            self.inter_arch: nn.Module = DotInteraction(F)
            inter_out = DotInteraction.out_features(F, D)
        else:
            self.inter_arch = CrossInteraction(F, D, config.dcn_layers)
            inter_out = CrossInteraction.out_features(F, D)
        self.over_arch = _mlp(inter_out, config.top_mlp, config.dropout)
        top_out = config.top_mlp[-1] if config.top_mlp else inter_out
        self.heads = nn.ModuleDict({h: nn.Linear(top_out, 1) for h in config.heads})

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(self.config.heads)

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:  # [B, F] -> [B, F, D]
        raise NotImplementedError

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        embedded_dense = self.dense_arch(dense)
        embedded_sparse = self.embed(sparse)
        top = self.over_arch(self.inter_arch(embedded_dense, embedded_sparse))
        return torch.cat([self.heads[h](top) for h in self.config.heads], dim=1)

    def copy_weights_from(self, other: nn.Module) -> "_DLRMBase":
        """Load another backend's (unsharded) weights: the state-dict keys are the same."""
        self.load_state_dict(other.state_dict(), strict=True)
        return self


class TorchRecSparseArch(nn.Module):
    """EBC lookup -> [B, F, D], features in config order."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
        from torchrec.modules.embedding_modules import EmbeddingBagCollection

        tables = [
            EmbeddingBagConfig(
                name=table,
                embedding_dim=config.embedding_dim,
                num_embeddings=card,
                feature_names=[name],
                # one id: SUM is the id's row; a bag: the mean of its values' rows
                pooling=PoolingType.MEAN if k > 1 else PoolingType.SUM,
            )
            for table, name, card, k in zip(
                config.table_names(), config.sparse_names, config.sparse_cardinalities,  # type: ignore[arg-type]
                config.sparse_slots,  # type: ignore[arg-type]
            )
        ]
        self.embedding_bag_collection = EmbeddingBagCollection(
            tables=tables, device=torch.device("cpu")
        )
        self.keys: list[str] = list(config.sparse_names)  # type: ignore[arg-type]
        self.slots: list[int] = list(config.sparse_slots)  # type: ignore[arg-type]
        self.F, self.D = config.n_sparse, config.embedding_dim

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        pooled = self.embedding_bag_collection(to_kjt(sparse, self.keys, self.slots))
        by_key = pooled.to_dict()
        return torch.cat([by_key[k] for k in self.keys], dim=1).reshape(-1, self.F, self.D)


class TorchRecDLRM(_DLRMBase):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.sparse_arch = TorchRecSparseArch(config)

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:
        return self.sparse_arch(sparse)


class _ReferenceEBC(nn.Module):
    """Mirrors EmbeddingBagCollection's state-dict layout: `embedding_bags.<table>.weight`.

    sparse: the one-id features' tables get sparse gradients (the rows a batch touched, for
    `torch.optim.SparseAdam`); a bag's mean pooling still gives its table a dense one."""

    def __init__(self, config: ModelConfig, sparse: bool = False) -> None:
        super().__init__()
        self.embedding_bags = nn.ModuleDict()
        for table, card in zip(config.table_names(), config.sparse_cardinalities):
            bag = nn.EmbeddingBag(card, config.embedding_dim, mode="sum", sparse=sparse)
            bound = math.sqrt(1.0 / card)  # TorchRec's default init
            nn.init.uniform_(bag.weight, -bound, bound)
            self.embedding_bags[table] = bag


def mean_bag(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[n, k] ids (-1: an unused slot) -> [n, D] the mean of the held ids' rows (0 if none),
    as TorchRec's MEAN pooling."""
    held = (ids >= 0).unsqueeze(-1).to(weight.dtype)
    rows = weight[ids.clamp(min=0)] * held
    return rows.sum(dim=1) / held.sum(dim=1).clamp(min=1.0)


class ReferenceSparseArch(nn.Module):
    def __init__(self, config: ModelConfig, sparse: bool = False) -> None:
        super().__init__()
        self.embedding_bag_collection = _ReferenceEBC(config, sparse)
        self.tables = config.table_names()
        self.columns = slot_columns(config.sparse_slots)  # type: ignore[arg-type]

    def forward(self, sparse: torch.Tensor, features: Sequence[int] | None = None) -> torch.Tensor:
        """[B, F, D]; `features`: only these (feature indices), e.g. one tower's side."""
        bags = self.embedding_bag_collection.embedding_bags
        pick = range(len(self.tables)) if features is None else features
        # without autograd (scoring, the towers' vectors) a one-id bag is its row: index_select
        # is about 2.5x faster than EmbeddingBag; training keeps the bag (its sparse gradients)
        one = ((lambda t, c: torch.index_select(bags[t].weight, 0, sparse[:, c])) if not torch.is_grad_enabled()
               else (lambda t, c: bags[t](sparse[:, c : c + 1])))
        cols = [one(t, c) if k == 1 else mean_bag(bags[t].weight, sparse[:, c : c + k])
                for t, (c, k) in ((self.tables[i], self.columns[i]) for i in pick)]
        if not cols:  # a side without sparse features (a mapped user side may have none)
            dim = next(iter(bags.values())).weight.shape[1]
            return torch.zeros(sparse.shape[0], 0, dim)
        return torch.stack(cols, dim=1)


class ReferenceDLRM(_DLRMBase):
    """sparse=True: sparse embedding gradients (`_ReferenceEBC`), e.g. to compare SparseAdam."""

    def __init__(self, config: ModelConfig, sparse: bool = False) -> None:
        super().__init__(config)
        self.sparse_arch = ReferenceSparseArch(config, sparse)

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:
        return self.sparse_arch(sparse)


def build_model(config: ModelConfig, backend: str = "torchrec") -> nn.Module:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if config.architecture == "two_tower":
        from ml.two_tower import TwoTower

        return TwoTower(config, backend)
    return TorchRecDLRM(config) if backend == "torchrec" else ReferenceDLRM(config)
