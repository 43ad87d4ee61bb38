"""(query x class) scoring of the DLRM, factorized by side: every class or each query's own.

Batch inference scores every candidate class of a platform for every (user, context) query:
thousands of pairs per query. Most of the DLRM's work does not depend on the pair:

* the bottom MLP's first layer is linear: W x = W_q x_q + W_c x_c + W_p x_p, so the query part
  is computed once per query; per pair, the pair features and the class's few dense features
  go through it in one small matmul (gathering k inputs per pair costs less than H1 outputs);
* of the interaction's dot products, query-query dots are per query (through its Gram matrix)
  and enter the top MLP's first layer as one bias vector per query; class-class dots are per
  class;
* the pair-dependent dots (the bottom MLP's output z with every embedding, query with class
  embeddings) enter that layer linearly. Two ways to use that, by the classes a query ranks:
  - a few hundred (retrieve then rank, `gather_classes`): the dots per pair, then one matmul
    with the layer's shared weights for every pair of the chunk;
  - the whole catalogue (exhaustive): the query folded into the weights once
    (sum_ij W[h,ij] <q_i, c_j> = <G_q[h], c_flat>), then one matmul per query: building G_q
    costs about a hundred pairs' work, so it pays only over thousands of classes.

What remains per pair is the rest of the bottom MLP, the pair-dependent dots, and the top
MLP, all as large matmuls. The result equals the model applied to the
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
        # vector 0 is the bottom MLP's output z, vector 1 + i the embedding of sparse feature i.
        # Per pair it reads x = [z, z.q_i, z.c_j, q_i.c_j in (j, i) order, c_j.c_k]; the q.q dots
        # and the bias are per query (`query_side`'s "t")
        F, D = len(sparse), self.tables[0].shape[1]
        triu = torch.triu_indices(F + 1, F + 1, offset=1)
        side = ["z"] + ["c" if i in self.c_sparse else "q" for i in range(F)]
        pos = {i: k for k, i in enumerate(self.q_sparse)} | {i: k for k, i in enumerate(self.c_sparse)}
        nq, nc = len(self.q_sparse), len(self.c_sparse)
        H = wt.shape[0]
        cc_pairs, wt_cc = [], []
        w_x = torch.zeros(D + nq + nc + nc * nq, H, device=self.device)
        w_x[:D] = wt[:, :D].T
        self._w_qq = torch.zeros(nq * nq, H, device=self.device)  # q.q through the Gram matrix
        for col, (a, b) in enumerate(zip(triu[0].tolist(), triu[1].tolist())):
            w = wt[:, D + col]
            kinds = (side[a], side[b])
            if kinds == ("z", "q"):
                w_x[D + pos[b - 1]] = w
            elif kinds == ("z", "c"):
                w_x[D + nq + pos[b - 1]] = w
            elif kinds == ("q", "q"):
                self._w_qq[pos[a - 1] * nq + pos[b - 1]] = w
            elif kinds == ("c", "c"):
                wt_cc.append(w)
                cc_pairs.append((pos[a - 1], pos[b - 1]))
            else:
                qi, cj = (a, b) if kinds == ("q", "c") else (b, a)
                w_x[D + nq + nc + pos[cj - 1] * nq + pos[qi - 1]] = w
        self.bt = bt
        self._dims = (D, nq, nc, H)
        self._w_x32 = torch.cat([w_x] + [w.unsqueeze(0) for w in wt_cc])  # [x width, H]
        self._w_x = self._w_x32.to(dtype)
        self._cc_idx = (torch.tensor([a for a, _ in cc_pairs], dtype=torch.long, device=self.device),
                        torch.tensor([b for _, b in cc_pairs], dtype=torch.long, device=self.device))
        self._q_idx, self._c_idx = self.q_dense.to(self.device), self.c_dense.to(self.device)
        # the bottom MLP's first layer per pair: [pair features, class dense] -> H1
        self._w1_pc = torch.cat([self.w1_p.T, self.w1_c.T], dim=0)
        # for `_query_weights`: [W_zq | W_qc by class feature] [nq, (1 + nc) * H]
        w_qc = w_x[D + nq + nc:D + nq + nc + nc * nq].view(nc, nq, H)
        self._w_zqc = torch.cat([w_x[D:D + nq].unsqueeze(1), w_qc.permute(1, 0, 2)],
                                dim=1).reshape(nq, (1 + nc) * H)

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

    def _on_device(self, side: Side) -> Side:
        return Side(side.dense.to(self.device, non_blocking=True),
                    side.sparse.to(self.device, non_blocking=True), side.raw)

    @torch.no_grad()
    def query_side(self, q: Side) -> dict[str, torch.Tensor]:
        """Per query: "a", its part of the bottom MLP's first layer [n, H1]; "t", its part of the
        top MLP's first layer [n, H] (the bias and the q.q dots); "e", its embeddings [n, nq, D]."""
        q = self._on_device(q)
        e = self._embed(q.sparse, self.q_sparse)  # [n, nq, D]
        n, nq, _ = e.shape
        t = self.bt + torch.bmm(e, e.transpose(1, 2)).view(n, nq * nq) @ self._w_qq
        a = torch.index_select(q.dense, 1, self._q_idx) @ self.w1_q.T + self.b1
        return {"a": a, "t": t.to(self.dtype), "e": e.to(self.dtype)}

    def _query_weights(self, qs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[n, D + nc + nc*D + P_cc + 1, H]: the top MLP's first layer with the query folded in, for
        a pair's [z, z.c_j, c flat in (j, d) order, c.c dots, 1]. Building it costs about a hundred
        pairs' work a query: worth it when a query ranks the whole catalogue, not a few hundred."""
        e = qs["e"].float()
        n = e.shape[0]
        D, nq, nc, H = self._dims
        # zq[n, d, 0] = sum_i e[n, i, d] W_zq[i]; zq[n, d, 1 + j] = sum_i e[n, i, d] W_qc[j, i]
        zq = (e.transpose(1, 2).reshape(n * D, nq) @ self._w_zqc).view(n, D, 1 + nc, H)
        w_x = self._w_x32
        cc = w_x[D + nq + nc + nc * nq:]
        r = torch.empty(n, D + nc + nc * D + cc.shape[0] + 1, H, device=self.device)
        torch.add(zq[:, :, 0], w_x[:D], out=r[:, :D])
        r[:, D:D + nc] = w_x[D + nq:D + nq + nc]
        r[:, D + nc:D + nc + nc * D].view(n, nc, D, H).copy_(zq[:, :, 1:].transpose(1, 2))
        r[:, D + nc + nc * D:-1] = cc
        r[:, -1] = qs["t"]
        return r.to(self.dtype)

    @torch.no_grad()
    def class_side(self, c: Side) -> dict[str, torch.Tensor]:
        """Per class: "d", its dense features [C, k] (they go through the bottom MLP's first layer
        with the pair's: gathering k inputs costs less than H1 outputs); "e", its embeddings
        [C, nc, D]; "cc", its c.c dots [C, P_cc]. `gather_classes` copies them per query."""
        c = self._on_device(c)
        e = self._embed(c.sparse, self.c_sparse)  # [C, nc, D]
        a, b = self._cc_idx
        cc = (e[:, a] * e[:, b]).sum(-1).to(self.dtype)
        e = e.to(self.dtype)
        # "flat": the inputs a catalogue-wide `score` reads per pair; a query's own candidates
        # (`gather_classes`) need not copy it
        return {"d": torch.index_select(c.dense, 1, self._c_idx), "e": e, "cc": cc,
                "flat": torch.cat([e.flatten(1), cc], dim=1)}

    # -- pairs -------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, qs: dict[str, torch.Tensor], cs: dict[str, torch.Tensor],
              pair_dense: torch.Tensor | None) -> torch.Tensor:
        """Logits [n_queries, n_classes] on the model's device (`cs` of every query, [C, ...], or
        each query's own, [n, C, ...]: `gather_classes`); `pair_dense` [n, C, n_pair]
        normalized pair features (copied to the device when elsewhere).

        Memory-bound steps work on one [n*C, width] buffer at a time; keep n*C to a few tens of
        thousands so the buffers stay in cache (`factorized_score_matrix` chunks)."""
        n, nq, D = qs["e"].shape
        own = cs["e"].dim() == 4
        C, nc = cs["e"].shape[-3], cs["e"].shape[-2]
        cd = cs["d"] if own else cs["d"].expand(n, -1, -1)
        ones = torch.ones(n, C, 1, dtype=cd.dtype, device=self.device)
        # the bottom MLP's first layer in one matmul: [pair, class dense, 1] @ [W_p^T; W_c^T; a_q]
        inputs, w = [cd, ones], self._w1_pc[len(self.p_dense):]
        if pair_dense is not None and pair_dense.shape[-1]:
            inputs.insert(0, pair_dense.to(self.device, non_blocking=True))
            w = self._w1_pc
        h = torch.bmm(torch.cat(inputs, dim=2),
                      torch.cat([w.expand(n, -1, -1), qs["a"].unsqueeze(1)], dim=1))
        z = h.relu_().to(self.dtype).view(n * C, -1)
        for w, b in self.bottom_rest:
            z = torch.addmm(b, z, w.T).relu_()
        z = z.view(n, C, D)
        if own:
            # the top MLP's first layer: one matmul with shared weights, plus each query's part
            zq = torch.bmm(z, qs["e"].transpose(1, 2))  # [n, C, nq]
            zc = torch.matmul(cs["e"], z.unsqueeze(-1)).squeeze(-1)  # [n, C, nc]
            qc = torch.bmm(cs["e"].view(n, C * nc, D), qs["e"].transpose(1, 2)).view(n, C, nc * nq)
            x = torch.cat([z, zq, zc, qc, cs["cc"]], dim=2).view(n * C, -1) @ self._w_x
            x = x.view(n, C, -1).add_(qs["t"].unsqueeze(1))
        else:  # the whole catalogue: each query's weights (`_query_weights`), one bmm
            zc = torch.einsum("ncd,cjd->ncj", z, cs["e"])
            ones = torch.ones(n, C, 1, dtype=z.dtype, device=self.device)
            x = torch.cat([z, zc, cs["flat"].expand(n, -1, -1), ones], dim=2)
            x = torch.bmm(x, self._query_weights(qs))
        x = x.relu_().view(n * C, -1)
        for w, b in self.top_rest:
            x = torch.addmm(b, x, w.T).relu_()
        return (x @ self.w_head + self.b_head).float().view(n, C)


def gather_classes(cs: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The class side of each query's own candidates: `idx` [n, m] class rows -> [n, m, ...]."""
    flat = idx.reshape(-1)  # index_select: about twice as fast as advanced indexing on CPU
    return {k: torch.index_select(v, 0, flat).view(*idx.shape, *v.shape[1:])
            for k, v in cs.items() if k != "flat"}


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
        sub = Side(users.dense[ui[0]:ui[-1] + 1], users.sparse[ui[0]:ui[-1] + 1], {})  # a view
        own = None if idx is None else idx[ui]
        pd = pair_dense_features(encoder, users, ui, classes, model.p_dense, own)  # [n, m, p]
        chunk_cs = cs if own is None else gather_classes(cs, torch.from_numpy(own).to(model.device))
        out[ui] = model.score(model.query_side(sub), chunk_cs, pd).cpu().numpy()
    return out


__all__ = ["FactorizedDLRM", "factorized_score_matrix", "gather_classes", "pair_dense_features"]
