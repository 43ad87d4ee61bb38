"""Every metric the project reports, over numpy arrays: ranking (MAP/nDCG/recall/hit@K over
score matrices), classification (ROC AUC, log-loss), calibration (deciles, ECE), and the finite
values that reports may carry (MLflow, Ray reports, JSON histories).

A list is one row of a [n_lists, n_candidates] score matrix; its relevant set is a boolean row
of the same shape plus the count of relevant items that were not candidates at all (a class
released later that day): those still count in recall's and AP's denominators, so every ranker
is judged against the same truth.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

KS = (5, 10, 20)


def top_k(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """[n, k] candidate indices, best first. Excluded candidates never appear (they rank below
    everything; with fewer than k eligible ones the tail is -1). Ties break by candidate index."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if excluded is not None:
        s[excluded] = -np.inf
    k_eff = min(k, s.shape[1])
    # stable: sort by (-score, index) within the partitioned top block
    part = np.argpartition(-s, k_eff - 1, axis=1)[:, :k_eff] if k_eff < s.shape[1] else \
        np.tile(np.arange(s.shape[1]), (s.shape[0], 1))
    block = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -block), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top_scores = np.take_along_axis(block, order, axis=1)
    top = np.where(np.isneginf(top_scores), -1, top)
    if k_eff < k:
        top = np.hstack([top, np.full((top.shape[0], k - k_eff), -1)])
    return top


def list_metrics(
    top: np.ndarray,
    relevant: np.ndarray,
    n_relevant: np.ndarray,
    ks: tuple[int, ...] = KS,
) -> dict[str, np.ndarray]:
    """Per-list AP@K, nDCG@K, recall@K, hit@K for binary relevance.

    top: [n, >=max(ks)] candidate indices (-1 = empty slot); relevant: [n, n_candidates] bool;
    n_relevant: [n] size of each relevant set, candidates or not (must be >= 1).
    """
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    if np.any(n_relevant < 1):
        raise ValueError("every list needs at least one relevant item")
    valid = top >= 0
    hits = np.where(valid, np.take_along_axis(relevant, np.where(valid, top, 0), axis=1), False)
    hits = hits.astype(np.float64)
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    cum = np.cumsum(hits, axis=1)
    prec = cum / ranks
    disc = 1.0 / np.log2(ranks + 1.0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        denom = np.minimum(n_relevant, k)
        out[f"map@{k}"] = (prec[:, :k] * h).sum(1) / denom
        ideal = np.array([disc[: int(m)].sum() for m in denom])
        out[f"ndcg@{k}"] = (h * disc[:k]).sum(1) / ideal
        out[f"recall@{k}"] = h.sum(1) / n_relevant
        out[f"hit@{k}"] = (h.sum(1) > 0).astype(np.float64)
    return out


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if y.size else float("nan")


def calibration_table(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict]:
    """Predicted-probability deciles (equal counts): mean prediction vs actual rate per bin."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.size == 0:
        return []
    order = np.argsort(p, kind="mergesort")
    rows = []
    for i, idx in enumerate(np.array_split(order, bins)):
        if idx.size == 0:
            continue
        rows.append({
            "decile": i + 1, "n": int(idx.size),
            "mean_predicted": float(p[idx].mean()), "actual_rate": float(y[idx].mean()),
        })
    return rows


def expected_calibration_error(table: list[dict]) -> float:
    n = sum(r["n"] for r in table)
    if not n:
        return float("nan")
    return float(sum(r["n"] * abs(r["mean_predicted"] - r["actual_rate"]) for r in table) / n)




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


# ---------------------------------------------------------------------------------------------
# Finite values for reports


def finite(value: Any) -> float | None:
    """`float(value)` when it is a finite number; None for NaN, infinities, None and text."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def finite_or_nan(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Every value as a float, NaN where it is not a finite number."""
    out = {}
    for k, v in metrics.items():
        f = finite(v)
        out[k] = float("nan") if f is None else f
    return out


__all__ = ["KS", "calibration_table", "expected_calibration_error", "finite", "finite_or_nan",
           "list_metrics", "log_loss", "roc_auc", "top_k"]
