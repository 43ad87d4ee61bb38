"""Offline evaluation on held-out days: every ranker on the same lists (`ml.lists`).

Figures: MAP/nDCG/recall/hit@K per platform and overall, catalogue coverage, a cold-start-class
slice (classes at most `new_class_days` old: their share of the recommended slots and their
recall), a cold-start-user slice (fewer than `cold_user_workouts` workouts before the day), and,
for model rankers, per-head AUC / log-loss and a calibration table on the held-out examples
(`head_metrics`). The metrics themselves are `ml.metrics`; the rankers `ml.rankers`; the
tables and plots `ml.report`.

Mapped data has no oracle: the model is compared with popularity and the context-free ablation
on a temporal split (trained on the earlier days, evaluated on the held-out last days); the
protocol of each dataset is its `Dataset` (`ml.datasets`).
"""

from __future__ import annotations

import datetime as dt
import time
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import polars as pl
import torch

from ml.datasets import dataset_of
from ml.examples import iter_batches, read_examples
from ml.features import Encoders
from ml.gold import GoldStore
from ml.lists import EvalSettings, build_lists
from ml.metrics import (
    calibration_table,
    expected_calibration_error,
    list_metrics,
    log_loss,
    paired_bootstrap_ratio,
    roc_auc,
    top_k,
)
from ml.pairs import ScoreFn
from ml.rankers import Ranker


@dataclass
class EvalResult:
    settings: EvalSettings
    lists: pl.DataFrame  # one row per (ranker, day, platform, user) with per-list metrics
    summary: pl.DataFrame  # one row per (ranker, platform incl. "all")
    coverage: dict[str, float]
    new_class_share: dict[str, float]  # share of top-10 slots given to new classes
    seconds: dict[str, float]  # scoring seconds per ranker
    heads: dict[str, dict] = field(default_factory=dict)  # per model ranker: AUC/logloss/calibration

    def metric(self, ranker: str, name: str, platform: str = "all") -> float:
        row = self.summary.filter((pl.col("ranker") == ranker) & (pl.col("platform") == platform))
        return float(row[name][0]) if row.height and name in row.columns else float("nan")

    def compare(self, a: str, b: str, metric: str = "map@10", *, n_boot: int = 2000,
                where: pl.Expr | None = None) -> dict:
        """`a`'s mean `metric` over `b`'s on the same lists, with a paired bootstrap 95%
        interval that resamples users (`ml.metrics.paired_bootstrap_ratio`); also the lists and
        users counted. `where`: only the lists it keeps (a slice, e.g. `~pl.col("cold_user")`).
        Empty (NaN) when either ranker was not evaluated."""
        keys = ["day", "platform", "user_id"]
        lists = self.lists if where is None else self.lists.filter(where)
        pair = (lists.filter(pl.col("ranker") == a).select(*keys, pl.col(metric).alias("a"))
                .join(lists.filter(pl.col("ranker") == b).select(*keys, pl.col(metric).alias("b")),
                      on=keys, how="inner"))
        out = paired_bootstrap_ratio(pair["a"].to_numpy(), pair["b"].to_numpy(),
                                     pair["user_id"].to_numpy(), n_boot=n_boot, seed=self.settings.seed)
        out["users"] = out.pop("groups")
        return out


def evaluate(gold: GoldStore, rankers: Sequence[Ranker], settings: EvalSettings, *,
             log=None) -> EvalResult:
    """Rank every list of `settings.days` with every ranker; per-list and summary metrics."""
    for r in rankers:
        spec = getattr(getattr(r, "encoders", None), "spec", None)
        if spec is not None and not settings.dataset.matches(spec):
            raise ValueError(f"ranker {r.name!r} was trained on {spec.dataset!r} data; the "
                             f"evaluation is of {settings.dataset.name!r} data")
    rows: list[pl.DataFrame] = []
    recommended: dict[str, set] = {r.name: set() for r in rankers}
    candidates: set = set()
    new_slots = {r.name: [0, 0] for r in rankers}
    seconds = {r.name: 0.0 for r in rankers}
    ks = tuple(sorted(set(settings.ks) | {10}))  # the cold-start slices use @10
    k_max = max(ks)
    for day, through in settings.list_days():
        for batch in build_lists(gold, day, settings, through):
            # ties at random, the same draw for every ranker of the batch, fixed by the seed
            tie_seed = (zlib.crc32(f"{settings.seed}|{day}|{batch.platform}".encode())
                        if settings.random_ties else None)
            class_ids = np.array(batch.classes["class_id"].to_list(), dtype=object)
            candidates |= set(class_ids.tolist())
            base = {
                "day": [day] * len(batch.n_relevant),
                "platform": [batch.platform] * len(batch.n_relevant),
                "user_id": batch.users["user_id"].to_list(),
                "cold_user": batch.is_cold_user.tolist(),
                "n_relevant": batch.n_relevant.tolist(),
                "new_relevant": batch.new_relevant.tolist(),
            }
            for r in rankers:
                t0 = time.perf_counter()
                scores = np.asarray(r.score(batch), dtype=np.float64)
                seconds[r.name] += time.perf_counter() - t0
                top = top_k(scores, k_max, batch.excluded, tie_seed=tie_seed)
                m = list_metrics(top, batch.relevant, batch.n_relevant, ks)
                # cold-start classes: recall@10 of the relevant new classes
                new_rel = batch.relevant & batch.is_new_class[None, :]
                t10 = top[:, :10]
                v = t10 >= 0
                hit_new = np.where(v, np.take_along_axis(new_rel, np.where(v, t10, 0), 1), False).sum(1)
                slots = np.where(v, batch.is_new_class[np.where(v, t10, 0)], False)
                new_slots[r.name][0] += int(slots.sum())
                new_slots[r.name][1] += int(v.sum())
                recommended[r.name] |= set(class_ids[t10[v]].tolist())
                rows.append(pl.DataFrame({
                    "ranker": [r.name] * len(batch.n_relevant), **base,
                    **{k: v_.tolist() for k, v_ in m.items()},
                    "new_hits@10": hit_new.tolist(),
                }))
                if log:
                    log(f"{day} {batch.platform:5s} {r.name:14s} lists {len(batch.n_relevant):6d} "
                        f"x {len(class_ids):5d} classes  map@10 {m['map@10'].mean():.4f}  "
                        f"{time.perf_counter() - t0:.1f}s")
    if not rows:
        raise ValueError(
            f"no evaluation lists: gold training_examples has no positives on {settings.days} "
            f"(user_fraction={settings.user_fraction})")
    lists = pl.concat(rows)
    metric_cols = [f"{m}@{k}" for m in ("map", "ndcg", "recall", "hit") for k in ks]
    agg = [pl.len().alias("lists"), *[pl.col(c).mean() for c in metric_cols]]
    cold = [pl.col("map@10").filter(pl.col("cold_user")).mean().alias("map@10_cold_users"),
            pl.col("cold_user").sum().alias("cold_user_lists"),
            (pl.col("new_hits@10").sum() / pl.col("new_relevant").sum()).alias("recall@10_new_classes")]
    per_platform = lists.group_by("ranker", "platform").agg(*agg, *cold)
    # a platform named "all" (mapped data without a platform column) is the overall row itself;
    # beside other platforms it is labelled apart from the overall row
    if set(lists["platform"].unique().to_list()) == {"all"}:
        per_platform = per_platform.filter(pl.col("platform") != "all")
    else:
        per_platform = per_platform.with_columns(
            pl.when(pl.col("platform") == "all").then(pl.lit("platform:all"))
            .otherwise(pl.col("platform")).alias("platform"))
    overall = lists.group_by("ranker").agg(*agg, *cold).with_columns(pl.lit("all").alias("platform"))
    summary = pl.concat([overall.select(per_platform.columns), per_platform]).sort("ranker", "platform")
    coverage = {k: len(v) / max(len(candidates), 1) for k, v in recommended.items()}
    new_share = {k: (a / b if b else float("nan")) for k, (a, b) in new_slots.items()}
    return EvalResult(settings, lists, summary, coverage, new_share, seconds)


@torch.no_grad()
def head_metrics(
    gold: GoldStore,
    score_fn: ScoreFn,
    encoders: Encoders,
    days: Sequence[dt.date],
    *,
    heads: Sequence[str] = ("take", "complete", "music_like"),
    sample_fraction: float = 1.0,
    seed: int = 0,
) -> dict:
    """AUC and log-loss per head on the held-out training examples (positives and their sampled
    negatives), and the take head's calibration table (predicted decile vs actual take rate)."""
    lf = read_examples(gold, start=min(days), end=max(days), sample_fraction=sample_fraction,
                       seed=seed, dataset=dataset_of(encoders.spec))
    probs, labels = [], []
    for batch in iter_batches(lf, encoders, 65_536):
        probs.append(torch.sigmoid(score_fn(batch.dense, batch.sparse).float()).numpy())
        labels.append(batch.labels.numpy())
    if not probs:
        raise ValueError(f"no held-out examples on {list(days)}")
    p, y = np.concatenate(probs), np.concatenate(labels)
    out: dict = {"examples": int(len(y))}
    for i, h in enumerate(heads):
        out[f"auc_{h}"] = roc_auc(y[:, i], p[:, i])
        out[f"logloss_{h}"] = log_loss(y[:, i], p[:, i])
    table = calibration_table(y[:, 0], p[:, 0])
    out["calibration"] = table
    out["ece_take"] = expected_calibration_error(table)
    return out


__all__ = ["EvalResult", "evaluate", "head_metrics"]
