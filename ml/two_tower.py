"""The two-tower retrieval model: a user tower and a class tower over the DLRM's own features.

Same inputs as the DLRM (`forward(dense, sparse)` on the rows `ml.features.Encoders` makes), so
it trains through the same loop, data, Ray Train workers and fused TorchRec path
(`ml.training_job.run_training` with `ModelHParams(architecture="two_tower")`):

* the sparse features go through one `EmbeddingBagCollection` (`sparse_arch`, the DLRM's
  `TorchRecSparseArch`, or `ReferenceSparseArch` in plain PyTorch: same state-dict keys);
* the user tower reads the query side (user features and the list's context: platform, hour,
  the workout before), the class tower the class side (id, instructor, discipline, length,
  popularity, age: a class released today gets a vector from its metadata); pair features
  (affinity to the class's instructor, ...) are left to the ranker;
* each tower is an MLP to `tower[-1]` dimensions, L2-normalized; the score is the cosine over a
  temperature.

Training (`model.train()`): `forward` returns the in-batch score matrix [B, B] and
`batch_loss` the softmax cross-entropy of each taken class against the other taken classes of
the batch (in-batch negatives; only rows whose first label is 1 count, and each class of the
batch is one negative however often it was taken: `_repeated`). Evaluation (`model.eval()`):
the pair's own score [B, 1], so AUC and the MLflow scorer work as for the DLRM. `TowerEncoder`
turns logged weights into vectors for the candidate index and for retrieval (`ml.retrieval`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.model import ModelConfig, ReferenceSparseArch, TorchRecSparseArch, _mlp


def tower_sides(config: ModelConfig) -> tuple[list[int], list[int], list[int], list[int]]:
    """(user dense, class dense, user sparse, class sparse) feature indices of `config`."""
    from ml.features import class_side, pair_feature

    if config.dense_names is None:
        raise ValueError("a two-tower ModelConfig needs dense_names (which side each column is)")
    dense, sparse = config.dense_names, config.sparse_names or []
    ud = [j for j, n in enumerate(dense) if not class_side(n) and pair_feature(n) is None]
    cd = [j for j, n in enumerate(dense) if class_side(n)]
    us = [i for i, n in enumerate(sparse) if not class_side(n)]
    cs = [i for i, n in enumerate(sparse) if class_side(n)]
    if not (us or ud) or not (cs or cd):
        raise ValueError(f"a two-tower model needs features on both sides: user {us + ud}, "
                         f"class {cs + cd} of {sparse} and {dense}")
    return ud, cd, us, cs


def _repeated(logits: torch.Tensor) -> torch.Tensor:
    """[B, B] the columns of in-batch logits (same class: -inf off the diagonal, as `forward`
    masks them) that repeat an earlier row's class, except each row's own.

    A class taken k times in a batch would otherwise be k negatives of every other row: the
    sampling bias of in-batch negatives (a popular class is pushed down as often as it is
    taken), which a logQ correction removes with estimated frequencies; counting each class once
    is that correction with the batch's own counts. On the demo's data it raised the recall of
    the ranker's top 10 at N = 200 from 0.88 to 0.98 (docs/benchmarks.md)."""
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    copies = torch.isneginf(logits) & ~eye
    later = (copies & torch.ones_like(copies).triu(1)).any(dim=0)  # column k: an earlier copy
    return later[None, :] & ~eye


def _tower(in_features: int, sizes: Sequence[int]) -> nn.Sequential:
    hidden = _mlp(in_features, sizes[:-1])
    last_in = sizes[-2] if len(sizes) > 1 else in_features
    return nn.Sequential(*hidden, nn.Linear(last_in, sizes[-1]))


class TwoTower(nn.Module):
    def __init__(self, config: ModelConfig, backend: str = "torchrec") -> None:
        super().__init__()
        self.config = config
        self.sparse_arch = (TorchRecSparseArch(config) if backend == "torchrec"
                            else ReferenceSparseArch(config))
        ud, cd, us, cs = tower_sides(config)
        for name, idx in (("u_dense", ud), ("c_dense", cd), ("u_sparse", us), ("c_sparse", cs)):
            self.register_buffer(name, torch.tensor(idx, dtype=torch.long), persistent=False)
        D = config.embedding_dim
        self.user_tower = _tower(len(us) * D + len(ud), config.tower)
        self.class_tower = _tower(len(cs) * D + len(cd), config.tower)
        self.temperature = float(config.temperature)

    @property
    def head_names(self) -> tuple[str, ...]:
        return self.config.heads

    def _vectors(self, tower: nn.Module, e: torch.Tensor, dense: torch.Tensor,
                 s_idx: torch.Tensor | None, d_idx: torch.Tensor) -> torch.Tensor:
        """Unit vectors of one side; `e` [B, F, D] every feature's embedding (s_idx picks the
        side's), or already the side's alone (s_idx None)."""
        side = e if s_idx is None else e.index_select(1, s_idx)
        x = torch.cat([side.flatten(1), dense.index_select(1, d_idx)], dim=1)
        return F.normalize(tower(x), dim=-1)

    def towers(self, dense: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors, class vectors) [B, d] of the rows (each side read from its columns)."""
        e = self.sparse_arch(sparse)
        return (self._vectors(self.user_tower, e, dense, self.u_sparse, self.u_dense),
                self._vectors(self.class_tower, e, dense, self.c_sparse, self.c_dense))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        u, c = self.towers(dense, sparse)
        if self.training:
            logits = u @ c.T / self.temperature  # [B, B]
            # the same class twice in a batch (identical class rows) is not its own negative
            same = (c @ c.T > 1.0 - 1e-6) & ~torch.eye(len(c), dtype=torch.bool, device=c.device)
            return logits.masked_fill(same, float("-inf"))
        score = (u * c).sum(dim=-1, keepdim=True) / self.temperature
        return score.repeat(1, len(self.config.heads))

    def batch_loss(self, logits: torch.Tensor, labels: torch.Tensor,
                   weights: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, per-head [1]) of the in-batch softmax over the rows with a take."""
        pos = labels[:, 0] > 0.5
        if int(pos.sum()) < 2:  # nothing to contrast: a zero loss that keeps the graph
            zero = logits.masked_fill(~torch.isfinite(logits), 0.0).sum() * 0.0
            return zero, zero.detach().reshape(1)
        sub = logits[pos][:, pos]
        sub = sub.masked_fill(_repeated(sub), float("-inf"))  # each class once in a row
        target = torch.arange(sub.shape[0], device=sub.device)
        loss = F.cross_entropy(sub, target)
        return loss * weights[0], loss.detach().reshape(1)


class TowerEncoder:
    """Vectors from a trained two-tower's weights, in plain PyTorch (no training code)."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], config: ModelConfig,
                 *, device: torch.device | str = "cpu") -> None:
        self.model = TwoTower(config, backend="reference")
        own = self.model.state_dict()  # a TorchScript trace also keeps the side index buffers
        self.model.load_state_dict({k: v.detach().cpu() for k, v in state_dict.items() if k in own},
                                   strict=True)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.config = config

    @property
    def dim(self) -> int:
        return int(self.config.tower[-1])

    @torch.no_grad()
    def _side(self, dense: torch.Tensor, sparse: torch.Tensor, user: bool, batch: int) -> np.ndarray:
        m = self.model
        out = []
        tower, s_idx, d_idx = ((m.user_tower, m.u_sparse, m.u_dense) if user
                               else (m.class_tower, m.c_sparse, m.c_dense))
        for s in range(0, dense.shape[0], batch):
            d = dense[s:s + batch].to(self.device)
            e = m.sparse_arch(sparse[s:s + batch].to(self.device), s_idx.tolist())  # this side's only
            out.append(m._vectors(tower, e, d, None, d_idx).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def users(self, dense: torch.Tensor, sparse: torch.Tensor, batch: int = 8192) -> np.ndarray:
        """[n, d] float32 unit vectors of encoded query-side rows (`ml.pairs.Side`)."""
        return self._side(dense, sparse, True, batch)

    def classes(self, dense: torch.Tensor, sparse: torch.Tensor, batch: int = 8192) -> np.ndarray:
        """[n, d] float32 unit vectors of encoded class-side rows."""
        return self._side(dense, sparse, False, batch)


__all__ = ["TowerEncoder", "TwoTower", "tower_sides"]
