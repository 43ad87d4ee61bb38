"""Exhaustive (query x class) scoring of the DLRM, factorized by side.

Batch inference scores every candidate class of a platform for every (user, context) query:
thousands of pairs per query. Most of the DLRM's work does not depend on the pair:

* the bottom MLP's first layer is linear: W x = W_q x_q + W_c x_c + W_p x_p, so the query and
  class parts are computed once per side and only the few pair features (`ml.features.
  pair_feature`) are multiplied per pair;
* of the interaction's dot products, query-query and class-class dots are per side; their
  share of the top MLP's first layer becomes one bias vector per query and one per class;
* query-class dots enter that layer linearly, so sum_ij W[h,ij] <q_i, c_j> = <G_q[h], c_flat>
  with G_q computed once per query: one large matmul per query instead of F^2 small dots.

What remains per pair is the rest of the bottom MLP, the dots with its output, and the top MLP
after its first layer, all as large matmuls. The result equals the model applied to the
explicit pairs (up to float rounding; a test holds them together). Only the "dot" interaction
factorizes; a "dcn" model is scored pair by pair (`ml.pairs.score_matrix`).

No Dagster, no torchrec: the weights come from the logged TorchScript module's state dict.
`FactorizedDLRM(..., device=...)` keeps the weights and does the work on that device (CPU by
default); `factorized_score_matrix` copies each chunk's inputs there and the scores back.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ml.features import FeatureSpec, class_side, pair_feature
from ml.model import mean_bag, slot_columns
from ml.pairs import PairEncoder, Side


def _linears(state: Mapping[str, torch.Tensor], prefix: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of `prefix.<i>.weight` in layer order (an `_mlp` is Linear, ReLU, ...)."""
    idx = sorted({int(k[len(prefix) + 1:].split(".")[0]) for k in state
                  if k.startswith(prefix + ".") and k.endswith(".weight")})
    return [(state[f"{prefix}.{i}.weight"].float(), state[f"{prefix}.{i}.bias"].float()) for i in idx]


class FactorizedDLRM:
    """Scores of one head for queries x classes, from a dot-interaction DLRM's weights."""

    def __init__(self, state: Mapping[str, torch.Tensor], spec: FeatureSpec,
                 heads: Sequence[str], *, head: str = "take",
                 dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        state = {k: v.detach().to(self.device) for k, v in state.items()}
        if not any(k.startswith("over_arch.") for k in state) or any(
                k.startswith("inter_arch.layers") for k in state):
            raise ValueError("only a dot-interaction DLRM factorizes")
        self.dtype = dtype
        dense, sparse = list(spec.dense), list(spec.sparse)
        self.q_dense = torch.tensor([j for j, n in enumerate(dense)
                                     if not class_side(n) and pair_feature(n) is None], dtype=torch.long)
        self.c_dense = torch.tensor([j for j, n in enumerate(dense) if class_side(n)], dtype=torch.long)
        self.p_dense = torch.tensor([j for j, n in enumerate(dense) if pair_feature(n) is not None], dtype=torch.long)
        self.q_sparse = [i for i, n in enumerate(sparse) if not class_side(n)]
        self.c_sparse = [i for i, n in enumerate(sparse) if class_side(n)]
        # both backends name a table's weights like TorchRec's EmbeddingBagCollection
        self.tables = [state[f"sparse_arch.embedding_bag_collection.embedding_bags.t_{n}.weight"].float()
                       for n in sparse]
        self.columns = slot_columns(spec.slots())  # of `Side.sparse`

        bottom = _linears(state, "dense_arch")
        (w1, b1), rest = bottom[0], bottom[1:]
        self.bottom_rest = [(w.to(dtype), b.to(dtype)) for w, b in rest]
        self.w1_q, self.w1_c, self.w1_p, self.b1 = (
            w1[:, self.q_dense], w1[:, self.c_dense], w1[:, self.p_dense], b1)
        top = _linears(state, "over_arch")
        if not top:
            raise ValueError("a DLRM without a top MLP does not factorize")
        (wt, bt), self.top_rest = top[0], [(w.to(dtype), b.to(dtype)) for w, b in top[1:]]
        if head not in heads:
            raise ValueError(f"head {head!r} not in the model's heads {tuple(heads)}")
        self.w_head = state[f"heads.{head}.weight"].float()[0].to(dtype)
        self.b_head = state[f"heads.{head}.bias"].float()[0].to(dtype)

        # the top MLP's first layer, split by which vectors each input column involves;
        # vector 0 is the bottom MLP's output z, vector 1 + i the embedding of sparse feature i
        F, D = len(sparse), self.tables[0].shape[1]
        triu = torch.triu_indices(F + 1, F + 1, offset=1)
        side = ["z"] + ["c" if i in self.c_sparse else "q" for i in range(F)]
        pos = {i: k for k, i in enumerate(self.q_sparse)} | {i: k for k, i in enumerate(self.c_sparse)}
        nq, nc = len(self.q_sparse), len(self.c_sparse)
        H = wt.shape[0]
        self.wt_z = wt[:, :D]  # [H, D]
        self.bt = bt
        self.wt_qq, self.qq_pairs = [], []
        self.wt_cc, self.cc_pairs = [], []
        self.wt_zq = torch.zeros(H, nq, device=self.device)
        self.wt_zc = torch.zeros(H, nc, device=self.device)
        self.wt_qc = torch.zeros(H, nq, nc, device=self.device)
        for col, (a, b) in enumerate(zip(triu[0].tolist(), triu[1].tolist())):
            w = wt[:, D + col]
            kinds = (side[a], side[b])
            if kinds == ("z", "q"):
                self.wt_zq[:, pos[b - 1]] = w
            elif kinds == ("z", "c"):
                self.wt_zc[:, pos[b - 1]] = w
            elif kinds == ("q", "q"):
                self.wt_qq.append(w)
                self.qq_pairs.append((pos[a - 1], pos[b - 1]))
            elif kinds == ("c", "c"):
                self.wt_cc.append(w)
                self.cc_pairs.append((pos[a - 1], pos[b - 1]))
            else:
                qi, cj = (a, b) if kinds == ("q", "c") else (b, a)
                self.wt_qc[:, pos[qi - 1], pos[cj - 1]] = w
        # index tensors on the device once, so scoring copies nothing from the host
        self._q_idx, self._c_idx = self.q_dense.to(self.device), self.c_dense.to(self.device)
        self._qq_idx, self._cc_idx = self._pair_index(self.qq_pairs), self._pair_index(self.cc_pairs)
        self._w_qc = self.wt_qc.permute(1, 2, 0).reshape(nq, nc * H)  # [i, (j, h)]
        self._w_zc = self.wt_zc.T.contiguous()  # [nc, H]

    def _pair_index(self, pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor([p[0] for p in pairs], dtype=torch.long, device=self.device),
                torch.tensor([p[1] for p in pairs], dtype=torch.long, device=self.device))

    # -- sides -------------------------------------------------------------------------------
    def _embed(self, sparse: torch.Tensor, features: list[int]) -> torch.Tensor:
        if not features:  # e.g. a mapped dataset without item attributes: no class embedding
            return torch.zeros(sparse.shape[0], 0, self.tables[0].shape[1], device=self.device)
        def one(i: int) -> torch.Tensor:
            c, k = self.columns[i]
            # index_select: about twice as fast as advanced indexing on CPU
            return (torch.index_select(self.tables[i], 0, sparse[:, c]) if k == 1
                    else mean_bag(self.tables[i], sparse[:, c:c + k]))

        return torch.stack([one(i) for i in features], dim=1)  # [n, k, D]

    @staticmethod
    def _pair_dots(e: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor],
                   w: list[torch.Tensor]) -> torch.Tensor:
        a, b = pairs
        if not len(a):
            return torch.zeros(e.shape[0], 0, device=e.device), torch.zeros(0, device=e.device)
        return (e[:, a] * e[:, b]).sum(-1), torch.stack(w, dim=1)  # [n, P], [H, P]

    def _on_device(self, side: Side) -> Side:
        return Side(side.dense.to(self.device, non_blocking=True),
                    side.sparse.to(self.device, non_blocking=True), side.raw)

    @torch.no_grad()
    def query_side(self, q: Side) -> dict[str, torch.Tensor]:
        q = self._on_device(q)
        e = self._embed(q.sparse, self.q_sparse)  # [n, nq, D]
        dots, w = self._pair_dots(e, self._qq_idx, self.wt_qq)
        t = self.bt + dots @ w.T if dots.shape[1] else self.bt.expand(e.shape[0], -1)
        # [z, z.c_j] -> H per query: z part W_z + sum_i e_i w_zq_i; the z.c_j part is shared
        m_z = self.wt_z.T.unsqueeze(0) + torch.einsum("nid,hi->ndh", e, self.wt_zq)  # [n, D, H]
        # g[n, (d, j), h] = sum_i e[n, i, d] wt_qc[h, i, j]: one matmul ([n*D, nq] @ [nq, nc*H]),
        # already in the class side's (d, j) order of c_flat
        n, nq, D = e.shape
        nc, H = self.wt_qc.shape[2], self.wt_qc.shape[0]
        g = (e.transpose(1, 2).reshape(n * D, nq) @ self._w_qc).view(n, D * nc, H)
        # one right-hand side per query for the pair inputs [z, z.c_j, c_flat, 1] (see score):
        # the last row, the query's own part t, is added by the same matmul
        r = torch.cat([m_z, self._w_zc.expand(n, -1, -1), g, t.unsqueeze(1)], dim=1)
        return {"a": q.dense[:, self._q_idx] @ self.w1_q.T + self.b1, "r": r.to(self.dtype)}

    @torch.no_grad()
    def class_side(self, c: Side) -> dict[str, torch.Tensor]:
        c = self._on_device(c)
        e = self._embed(c.sparse, self.c_sparse)  # [C, nc, D]
        dots, w = self._pair_dots(e, self._cc_idx, self.wt_cc)
        t = dots @ w.T if dots.shape[1] else torch.zeros(e.shape[0], self.bt.shape[0],
                                                         device=self.device)
        # c_flat in (d, j) order (the query side's g matches it); "e" [C, D, nc] views it
        flat = e.transpose(1, 2).flatten(1).to(self.dtype)
        return {"a": c.dense[:, self._c_idx] @ self.w1_c.T, "t": t.to(self.dtype),
                "e": flat.view(e.shape[0], e.shape[2], e.shape[1]), "e_flat": flat}

    # -- pairs -------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, qs: dict[str, torch.Tensor], cs: dict[str, torch.Tensor],
              pair_dense: torch.Tensor | None) -> torch.Tensor:
        """Logits [n_queries, n_classes] on the model's device (`cs` of every query, or each
        query's own: `gather_classes`); `pair_dense` [n, C, n_pair]
        normalized pair features (copied to the device when elsewhere).

        Memory-bound steps work in place on one [n*C, width] buffer at a time; keep n*C to a
        few tens of thousands so the buffers stay in cache (`factorized_score_matrix` chunks)."""
        n, C = qs["a"].shape[0], cs["a"].shape[-2]
        # per-query class sides (`gather_classes`) are this call's own copies: accumulate into
        # them instead of allocating and adding another [n, C, width] buffer
        own = cs.get("owned", False)
        h = cs["a"] if own else cs["a"].expand(n, -1, -1).clone()
        if pair_dense is not None and pair_dense.shape[-1]:
            # the pair features and the query's part in one matmul: [pd, 1] @ [W_p^T; a_q]
            pd = pair_dense.to(self.device, non_blocking=True)
            ones = torch.ones(n, C, 1, dtype=pd.dtype, device=self.device)
            w = torch.cat([self.w1_p.T.expand(n, -1, -1), qs["a"].unsqueeze(1)], dim=1)
            h.baddbmm_(torch.cat([pd, ones], dim=2), w)
        else:
            h += qs["a"].unsqueeze(1)
        z = h.relu_().to(self.dtype).view(n * C, -1)
        for w, b in self.bottom_rest:
            z = torch.addmm(b, z, w.T).relu_()
        z = z.view(n, C, -1)  # [n, C, D]
        # cs per query ([n, C, ...], `gather_classes`: each query's own candidates) or shared
        zc = torch.einsum("ncd,ncdj->ncj" if cs["e"].dim() == 4 else "ncd,cdj->ncj", z, cs["e"])
        ones = torch.ones(n, C, 1, dtype=z.dtype, device=self.device)
        x = torch.cat([z, zc, cs["e_flat"].expand(n, -1, -1), ones], dim=2)
        # [n, C, H]: the first top layer, its pair-dependent part and the query's (r) + the class's
        if own:
            top = cs["t"].baddbmm_(x, qs["r"])
        else:
            top = torch.bmm(x, qs["r"])
            top += cs["t"]
        x = top.relu_().view(n * C, -1)
        for w, b in self.top_rest:
            x = torch.addmm(b, x, w.T).relu_()
        return (x @ self.w_head + self.b_head).float().view(n, C)


def gather_classes(cs: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The class side of each query's own candidates: `idx` [n, m] class rows -> [n, m, ...]
    (`e` is a view of the gathered `e_flat`: one copy of the embeddings, not two)."""
    flat = idx.reshape(-1)  # index_select: about twice as fast as advanced indexing on CPU
    out = {k: torch.index_select(v, 0, flat).view(*idx.shape, *v.shape[1:])
           for k, v in cs.items() if k in ("a", "t", "e_flat")}
    out["e"] = out["e_flat"].view(*idx.shape, *cs["e"].shape[1:])
    out["owned"] = True  # fresh copies: `FactorizedDLRM.score` may write into them
    return out


def pair_dense_features(encoder: PairEncoder, users: Side, ui: np.ndarray, classes: Side,
                        columns: torch.Tensor, cidx: np.ndarray | None = None) -> torch.Tensor:
    """[n, C, n_pair] normalized pair features in the order of `columns` (dense indices);
    [n, m, n_pair] of each user's own classes with `cidx` [n, m] (class rows)."""
    names = dict(encoder.pair_cols)
    n, C = len(ui), classes.dense.shape[0] if cidx is None else cidx.shape[1]
    if len(columns) == 0:
        return torch.zeros(n, C, 0)
    return torch.from_numpy(np.stack(
        [encoder.pair_dense(names[int(j)], users, ui, classes, cidx) for j in columns], axis=-1
    ).astype(np.float32))


@torch.no_grad()
def factorized_score_matrix(model: FactorizedDLRM, encoder: PairEncoder, users: Side,
                            classes: Side, *, max_pairs: int = 32_768,
                            class_side: dict[str, torch.Tensor] | None = None,
                            idx: np.ndarray | None = None) -> np.ndarray:
    """[n_users, n_classes] logits, users chunked so a chunk holds <= max_pairs pairs; with
    `idx` [n_users, m] (class rows), [n_users, m] logits of each user's own candidates (the
    retrieve-then-rank path: m classes a user instead of all of them).
    `class_side`: `model.class_side(classes)` when the caller keeps it across calls.
    The sides and pair features are built on the host; each chunk is scored on `model.device`."""
    n_users, n_classes = users.dense.shape[0], classes.dense.shape[0]
    m = n_classes if idx is None else idx.shape[1]
    out = np.empty((n_users, m), dtype=np.float32)
    cs = class_side if class_side is not None else model.class_side(classes)
    step = max(1, max_pairs // max(m, 1))
    for start in range(0, n_users, step):
        ui = np.arange(start, min(start + step, n_users))
        sub = Side(users.dense[ui], users.sparse[ui], {})
        own = None if idx is None else idx[ui]
        pd = pair_dense_features(encoder, users, ui, classes, model.p_dense, own)  # [n, m, p]
        chunk_cs = cs if own is None else gather_classes(cs, torch.from_numpy(own).to(model.device))
        out[ui] = model.score(model.query_side(sub), chunk_cs, pd).cpu().numpy()
    return out


__all__ = ["FactorizedDLRM", "factorized_score_matrix", "gather_classes", "pair_dense_features"]
