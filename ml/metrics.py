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


def top_k(scores: np.ndarray, k: int, excluded: np.ndarray | None = None, *,
          tie_seed: int | None = None) -> np.ndarray:
    """[n, k] candidate indices, best first. Excluded candidates never appear (they rank below
    everything; with fewer than k eligible ones the tail is -1).

    Ties break by candidate index, or, with `tie_seed`, at random with that seed (the same
    scores and seed give the same order): an index order favours whatever the ids sort first,
    which is no ranker's merit (popularity's counts tie often)."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if excluded is not None:
        s[excluded] = -np.inf
    k_eff = min(k, s.shape[1])
    if tie_seed is None:
        tie = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    else:
        tie = np.random.default_rng(tie_seed).random(s.shape)
    # every candidate tied with the k-th must reach the sort, so the tie order decides among them
    if k_eff < s.shape[1]:
        kth = -np.partition(-s, k_eff - 1, axis=1)[:, k_eff - 1:k_eff]
        width = int((s >= kth).sum(1).max())
        part = np.argpartition(-s, width - 1, axis=1)[:, :width] if width < s.shape[1] else \
            np.tile(np.arange(s.shape[1]), (s.shape[0], 1))
    else:
        part = np.tile(np.arange(s.shape[1]), (s.shape[0], 1))
    block = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((np.take_along_axis(tie, part, axis=1), -block), axis=1)[:, :k_eff]
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
# Uncertainty of a comparison


def paired_bootstrap_ratio(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None, *,
                           n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """mean(a) / mean(b) over the same lists, with a paired percentile bootstrap interval.

    a, b: one value per list (say AP@10 of two rankers on the same lists). Both rankers see the
    same resample (paired). With `groups` (the user of each list), whole groups are resampled,
    not lists: one user's lists are not independent draws, and resampling them apart would
    narrow the interval. Returns ratio, low, high, lists, groups, n_boot, level; NaN where b's
    mean is 0 (no ratio to speak of)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    if groups is None:
        sums_a, sums_b = a, b
    else:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        sums_a, sums_b = np.bincount(inv, weights=a), np.bincount(inv, weights=b)
    g = len(sums_a)
    out = {"ratio": float("nan"), "low": float("nan"), "high": float("nan"), "lists": int(a.size),
           "groups": int(g), "n_boot": int(n_boot), "level": float(level)}
    if g == 0 or sums_b.sum() <= 0:
        return out
    out["ratio"] = float(sums_a.sum() / sums_b.sum())
    rng = np.random.default_rng(seed)
    ratios = []
    for start in range(0, n_boot, 256):  # weights of 256 resamples at a time: bounded memory
        w = rng.multinomial(g, np.full(g, 1.0 / g), size=min(256, n_boot - start)).astype(np.float64)
        num, den = w @ sums_a, w @ sums_b
        ratios.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan))
    r = np.concatenate(ratios)
    r = r[np.isfinite(r)]
    if r.size:
        tail = (1.0 - level) / 2.0
        out["low"], out["high"] = (float(x) for x in np.quantile(r, [tail, 1.0 - tail]))
    return out


def format_ratio(cmp: Mapping[str, Any]) -> str:
    """`1.23x [0.81, 1.78]`: a ratio with its interval, as the reports print it."""
    if finite(cmp.get("ratio")) is None:
        return "n/a"
    if finite(cmp.get("low")) is None:
        return f"{cmp['ratio']:.2f}x"
    return f"{cmp['ratio']:.2f}x [{_bound(cmp['low'])}, {_bound(cmp['high'])}]"


def _bound(x: float) -> str:
    """Two decimals, more where that would print a bound that is not 1 as "1.00": whether an
    interval clears 1 is what a reader looks for."""
    for digits in (2, 3, 4):
        text = f"{x:.{digits}f}"
        if x == 1.0 or float(text) != 1.0:
            return text
    return text


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
           "format_ratio", "list_metrics", "log_loss", "paired_bootstrap_ratio", "roc_auc", "top_k"]
