"""Offline evaluation on held-out days: the same lists, the same candidates, every ranker.

A list is one (user, platform, day) of the held-out window where the user took at least one
class on that platform; its relevant set is the classes taken. The candidates are the gold
`scoring_candidates` of that platform and serve day (released by the end of the day before),
minus the classes the user took in the `exclude_days` before (the product never re-recommends
them). Each ranker sees only what a daily batch list knows: user features as of the day before
and the context the list assumes ("For you": the user's usual hour on that platform).

Rankers:
* `ModelRanker`: a DLRM (any `(dense, sparse) -> logits` function with its encoders; the take
  head ranks); the context-free ablation is a ModelRanker over a model trained without context.
* `PopularityRanker`: workouts of each class on that platform over the `popularity_days` before.
* `ml.oracle.OracleRanker`: the simulator's true preferences (only when a simulator made the data).

Mapped data (`EvalSettings(dataset="mapped")`, any interaction log imported through a mapping
file): the platforms are those present in the held-out day's takes, the candidates the gold
scoring_candidates of each, and the list context is the user's usual hour (over all platforms;
else the most common usual hour of the day before), the day's weekday and, for each ctx_*
column, the value of the user's latest take (`last_ctx_*`). There is no oracle: the model is
compared with popularity and the context-free ablation on a temporal split (trained on the
earlier days, evaluated on the held-out last days).

Figures: MAP/nDCG/recall/hit@K per platform and overall, catalogue coverage, a cold-start-class
slice (classes at most `new_class_days` old: their share of the recommended slots and their
recall), a cold-start-user slice (fewer than `cold_user_workouts` workouts before the day), and,
for model rankers, per-head AUC / log-loss and a calibration table on the held-out examples.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import polars as pl
import torch

from ml.features import AFFINITY_COLUMN, DATASETS, LAST_CTX_PREFIX, PLATFORMS, Encoders
from ml.gold_reader import (
    _affinity,
    _scan,
    class_catalogue,
    class_popularity_at,
    iter_batches,
    read_examples,
    table_uri,
    user_kept,
)
from ml.pairs import PairEncoder, ScoreFn, score_matrix
from ml.ranking_metrics import (
    KS,
    calibration_table,
    expected_calibration_error,
    list_metrics,
    log_loss,
    top_k,
)
from ml.train import roc_auc

# A user with no usual hour on a platform yet: the list averages the take probability over
# these hours (early, morning, midday, evening, night) instead of guessing one.
UNKNOWN_HOURS = (6, 9, 12, 18, 21)


@dataclass
class ListBatch:
    """Every list of one (day, platform): users x candidates."""

    day: dt.date
    platform: str
    users: pl.DataFrame  # one row per list: user_id + user features at day - 1 (nulls if cold)
    classes: pl.DataFrame  # one row per candidate: class_id + catalogue + class_ popularity
    relevant: np.ndarray  # [U, C] bool
    n_relevant: np.ndarray  # [U] relevant classes, candidates or not
    excluded: np.ndarray  # [U, C] bool: taken in the exclude window
    popularity: np.ndarray  # [C] workouts on this platform in the popularity window
    is_new_class: np.ndarray  # [C] bool
    is_cold_user: np.ndarray  # [U] bool
    new_relevant: np.ndarray  # [U] relevant classes that are new (candidates or not)
    # mapped data: the hour of a list whose user has no usual hour yet (None: fitness rule)
    default_hour: int | None = None


class Ranker(Protocol):
    name: str

    def score(self, batch: ListBatch) -> np.ndarray:  # [U, C], higher = better
        ...


# ---------------------------------------------------------------------------------------------
# Rankers


def usual_hour(users: pl.DataFrame, platform: str) -> pl.Series:
    """The user's usual hour on the platform (fitness: usual_hour_<platform>; mapped data has
    one usual_hour over every platform), null where there is none."""
    col = f"usual_hour_{platform}"
    if col not in users.columns:
        col = "usual_hour"
    if col not in users.columns:
        return pl.Series("hour", [None] * users.height, dtype=pl.Int32)
    return users[col].cast(pl.Float64).round().cast(pl.Int32)


def mapped_list_context(users: pl.DataFrame, platform: str, day: dt.date,
                        hour: int | pl.Series | None = None) -> pl.DataFrame:
    """The context a mapped list assumes: the platform, an hour (default: the user's usual
    hour), the weekday of the day, and ctx_<name> = the user's last_ctx_<name> (the context of
    their latest take; null for a user without one)."""
    hours = usual_hour(users, platform) if hour is None else hour
    hour_expr = pl.lit(hours, pl.Int32) if isinstance(hours, int) else hours.cast(pl.Int32)
    dow = day.isoweekday()
    ctx = [pl.col(c).alias("ctx_" + c[len(LAST_CTX_PREFIX):])
           for c in users.columns if c.startswith(LAST_CTX_PREFIX)]
    return users.with_columns(
        pl.lit(platform).alias("platform"),
        hour_expr.alias("hour_of_day"),
        pl.lit(dow, pl.Int32).alias("day_of_week"),
        pl.lit(dow >= 6).alias("is_weekend"),
        *ctx,
        pl.lit(day).alias("event_date"),
    )


def list_context(users: pl.DataFrame, platform: str, day: dt.date,
                 hour: int | pl.Series | None = None, *, dataset: str = "fitness") -> pl.DataFrame:
    """The context a "For you" list assumes: the platform, an hour (default: the user's usual
    hour there), the weekday, and no previous class in the session (mapped data:
    `mapped_list_context`)."""
    if dataset == "mapped":
        return mapped_list_context(users, platform, day, hour)
    hours = usual_hour(users, platform) if hour is None else hour
    hour_expr = pl.lit(hours, pl.Int32) if isinstance(hours, int) else hours.cast(pl.Int32)
    dow = day.isoweekday()
    return users.with_columns(
        pl.lit(platform).alias("platform"),
        hour_expr.alias("hour_of_day"),
        pl.lit(dow, pl.Int32).alias("day_of_week"),
        pl.lit(dow >= 6).alias("is_weekend"),
        pl.lit(None, pl.Utf8).alias("prev_discipline"),
        pl.lit(None, pl.Utf8).alias("prev_body_focus"),
        pl.lit(None, pl.Int32).alias("prev_duration_min"),
        pl.lit(None, pl.Float64).alias("minutes_since_prev"),
        pl.lit(1, pl.Int32).alias("position_in_session"),
        pl.lit(day).alias("event_date"),
    )


class ModelRanker:
    """Ranks by a DLRM head (default: take) with the encoders it was trained with."""

    def __init__(self, name: str, score_fn: ScoreFn, encoders: Encoders, *, head: int = 0,
                 heads: Sequence[str] = ("take", "complete", "music_like")) -> None:
        self.name, self.score_fn, self.encoders, self.head = name, score_fn, encoders, head
        self.heads = tuple(heads)
        self.pairs = PairEncoder(encoders)

    def score(self, batch: ListBatch) -> np.ndarray:
        """log P(take) per (user, candidate); averaged over UNKNOWN_HOURS for a user with no
        usual hour on the platform (a new user, or a first visit to it). Mapped data: such a
        user's list assumes the batch's default hour instead."""
        classes = self.pairs.encode_classes(batch.classes.with_columns(pl.lit(batch.day).alias("event_date")))
        if self.encoders.spec.dataset == "mapped":
            hours = usual_hour(batch.users, batch.platform)
            if batch.default_hour is not None:
                hours = hours.fill_null(batch.default_hour)
            side = self.pairs.encode_users(
                mapped_list_context(batch.users, batch.platform, batch.day, hours))
            logits = score_matrix(self.score_fn, self.pairs, side, classes, head=self.head)
            return -np.logaddexp(0.0, -logits.astype(np.float64))  # log sigmoid
        hours = usual_hour(batch.users, batch.platform)
        known = hours.is_not_null().to_numpy()
        out = np.empty(batch.relevant.shape, dtype=np.float64)

        def log_prob(users: pl.DataFrame, hour) -> np.ndarray:
            side = self.pairs.encode_users(list_context(users, batch.platform, batch.day, hour))
            logits = score_matrix(self.score_fn, self.pairs, side, classes, head=self.head)
            return -np.logaddexp(0.0, -logits.astype(np.float64))  # log sigmoid

        if known.any():
            out[known] = log_prob(batch.users.filter(pl.Series(known)), hours.filter(pl.Series(known)))
        if (~known).any():
            cold = batch.users.filter(pl.Series(~known))
            probs = np.mean([np.exp(log_prob(cold, h)) for h in UNKNOWN_HOURS], axis=0)
            out[~known] = np.log(np.maximum(probs, 1e-30))
        return out


class PopularityRanker:
    name = "popularity"

    def score(self, batch: ListBatch) -> np.ndarray:
        return np.broadcast_to(batch.popularity.astype(np.float64), batch.relevant.shape)


def torch_score_fn(model: torch.nn.Module) -> ScoreFn:
    model.eval()

    @torch.no_grad()
    def fn(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return model(dense, sparse)

    return fn


# ---------------------------------------------------------------------------------------------
# Building the lists


@dataclass(kw_only=True)
class EvalSettings:
    days: list[dt.date]
    user_fraction: float = 1.0  # share of users evaluated (stable hash, as in training)
    seed: int = 0
    exclude_days: int = 14
    popularity_days: int = 7
    new_class_days: int = 3
    cold_user_workouts: int = 3  # cold user: fewer takes (workouts; mapped: events_total) before
    # None: fitness -> PLATFORMS; mapped -> every platform with takes on the evaluated day
    platforms: tuple[str, ...] | None = None
    ks: tuple[int, ...] = KS
    dataset: str = "fitness"  # or "mapped"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.platforms is None and self.dataset == "fitness":
            self.platforms = PLATFORMS


def _positives(lakehouse_uri: str, so, start: dt.date, end: dt.date) -> pl.LazyFrame:
    ex = _scan(table_uri(lakehouse_uri, "gold", "training_examples"), so)
    return (
        ex.filter((pl.col("event_date") >= start) & (pl.col("event_date") <= end)
                  & (pl.col("label_take") == 1))
        .select("event_date", "user_id", "class_id", "platform")
    )


def _default_hour(lakehouse_uri: str, so, fdate: dt.date) -> int:
    """Mapped data: the most common usual hour among the users at fdate (ties: the earliest),
    else the most common hour of the takes up to fdate, else 18."""
    uf = _scan(table_uri(lakehouse_uri, "gold", "user_features_daily"), so)
    for lf, col, filt in (
        (uf, "usual_hour", pl.col("feature_date") == fdate),
        (_scan(table_uri(lakehouse_uri, "gold", "training_examples"), so), "hour_of_day",
         (pl.col("event_date") <= fdate) & (pl.col("label_take") == 1)),
    ):
        if col not in lf.collect_schema().names():
            continue
        top = (lf.filter(filt).select(pl.col(col).cast(pl.Float64).round().cast(pl.Int32).alias("h"))
               .drop_nulls().group_by("h").len().sort(["len", "h"], descending=[True, False])
               .head(1).collect())
        if top.height:
            return int(top["h"][0])
    return 18


def build_lists(lakehouse_uri: str, day: dt.date, settings: EvalSettings,
                storage_options: dict | None = None) -> list[ListBatch]:
    so = storage_options or None
    mapped = settings.dataset == "mapped"
    fdate = day - dt.timedelta(days=1)
    taken = _positives(lakehouse_uri, so, day, day).collect()
    if settings.user_fraction < 1.0:
        keep = [user_kept(u, settings.user_fraction, settings.seed)
                for u in taken["user_id"].to_list()]
        taken = taken.filter(pl.Series(keep))
    if taken.height == 0:
        return []
    list_users = taken["user_id"].unique().to_list()

    uf = _scan(table_uri(lakehouse_uri, "gold", "user_features_daily"), so)
    ufeat = uf.filter((pl.col("feature_date") == fdate) & pl.col("user_id").is_in(list_users)).collect()
    aff = None if mapped else _affinity(lakehouse_uri, so)
    if aff is not None:  # each user's instructors as one list column (the pair features' lookup)
        per_user = (
            aff.filter((pl.col("feature_date") == fdate) & pl.col("user_id").is_in(list_users))
            .group_by("user_id")
            .agg(pl.struct("instructor_id", "share_56d", "workouts_56d").alias(AFFINITY_COLUMN))
            .collect()
        )
        ufeat = ufeat.join(per_user, on="user_id", how="left")
    history = (
        _positives(lakehouse_uri, so, day - dt.timedelta(days=settings.exclude_days), fdate)
        .filter(pl.col("user_id").is_in(list_users)).select("user_id", "class_id").unique().collect()
    )
    pop = (
        _positives(lakehouse_uri, so, day - dt.timedelta(days=settings.popularity_days), fdate)
        .group_by("platform", "class_id").len("workouts").collect()
    )
    cand = (
        _scan(table_uri(lakehouse_uri, "gold", "scoring_candidates"), so)
        .filter(pl.col("serve_date") == day).select("platform", "class_id").collect()
    )
    cfeat = class_popularity_at(lakehouse_uri, so, fdate, settings.dataset)
    catalogue = class_catalogue(lakehouse_uri, so, settings.dataset)
    platforms = settings.platforms
    if platforms is None:  # mapped: the platforms of the day's takes
        platforms = tuple(sorted(taken["platform"].unique().to_list()))
    default_hour = _default_hour(lakehouse_uri, so, fdate) if mapped else None

    out: list[ListBatch] = []
    for platform in platforms:
        t = taken.filter(pl.col("platform") == platform)
        if t.height == 0:
            continue
        c = (cand.filter(pl.col("platform") == platform).select("class_id")
             .join(catalogue, on="class_id", how="left").join(cfeat, on="class_id", how="left")
             .sort("class_id"))
        if c.height == 0:
            continue
        users = (t.select("user_id").unique().sort("user_id")
                 .join(ufeat, on="user_id", how="left"))
        cidx = {cid: j for j, cid in enumerate(c["class_id"].to_list())}
        uidx = {u: i for i, u in enumerate(users["user_id"].to_list())}
        U, C = users.height, c.height
        releases = c["release_date"].to_list() if "release_date" in c.columns else [None] * C
        age = np.array([(day - r).days if r is not None else 10**6 for r in releases])
        is_new = age <= settings.new_class_days
        new_ids = {cid for cid, n in zip(c["class_id"].to_list(), is_new) if n}
        if "release_date" in catalogue.columns:
            rel_catalogue = catalogue.filter(
                pl.col("release_date") >= day - dt.timedelta(days=settings.new_class_days))
            new_ids |= set(rel_catalogue["class_id"].to_list())
        relevant = np.zeros((U, C), dtype=bool)
        n_rel = np.zeros(U, dtype=np.int64)
        n_new = np.zeros(U, dtype=np.int64)
        for u, cid in t.select("user_id", "class_id").unique().iter_rows():
            i = uidx[u]
            n_rel[i] += 1
            n_new[i] += cid in new_ids
            j = cidx.get(cid)
            if j is not None:
                relevant[i, j] = True
        excluded = np.zeros((U, C), dtype=bool)
        for u, cid in history.filter(pl.col("user_id").is_in(list(uidx))).iter_rows():
            j = cidx.get(cid)
            if j is not None:
                excluded[uidx[u], j] = True
        popularity = np.zeros(C)
        for cid, n in pop.filter(pl.col("platform") == platform).select("class_id", "workouts").iter_rows():
            j = cidx.get(cid)
            if j is not None:
                popularity[j] = n
        count = "events_total" if mapped else "workouts_total"
        wt = users[count] if count in users.columns else pl.Series([None] * U)
        cold = wt.fill_null(0).cast(pl.Int64).to_numpy() < settings.cold_user_workouts
        out.append(ListBatch(
            day=day, platform=platform, users=users, classes=c, relevant=relevant,
            n_relevant=n_rel, excluded=excluded, popularity=popularity, is_new_class=is_new,
            is_cold_user=cold, new_relevant=n_new, default_hour=default_hour,
        ))
    return out


# ---------------------------------------------------------------------------------------------
# Running and summarising


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


def evaluate(
    lakehouse_uri: str,
    rankers: Sequence[Ranker],
    settings: EvalSettings,
    *,
    storage_options: dict | None = None,
    log=None,
) -> EvalResult:
    for r in rankers:
        spec = getattr(getattr(r, "encoders", None), "spec", None)
        if spec is not None and spec.dataset != settings.dataset:
            raise ValueError(f"ranker {r.name!r} was trained on {spec.dataset!r} data; the "
                             f"evaluation is of {settings.dataset!r} data")
    rows: list[pl.DataFrame] = []
    recommended: dict[str, set] = {r.name: set() for r in rankers}
    candidates: set = set()
    new_slots = {r.name: [0, 0] for r in rankers}
    seconds = {r.name: 0.0 for r in rankers}
    ks = tuple(sorted(set(settings.ks) | {10}))  # the cold-start slices use @10
    k_max = max(ks)
    for day in settings.days:
        for batch in build_lists(lakehouse_uri, day, settings, storage_options):
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
                top = top_k(scores, k_max, batch.excluded)
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
    lakehouse_uri: str,
    score_fn: ScoreFn,
    encoders: Encoders,
    days: Sequence[dt.date],
    *,
    heads: Sequence[str] = ("take", "complete", "music_like"),
    storage_options: dict | None = None,
    sample_fraction: float = 1.0,
    seed: int = 0,
) -> dict:
    """AUC and log-loss per head on the held-out training examples (positives and their sampled
    negatives), and the take head's calibration table (predicted decile vs actual take rate)."""
    lf = read_examples(lakehouse_uri, start=min(days), end=max(days), storage_options=storage_options,
                       sample_fraction=sample_fraction, seed=seed, dataset=encoders.spec.dataset)
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


# ---------------------------------------------------------------------------------------------
# Presentation


def comparison_table(result: EvalResult, *, reference: str | None = None,
                     columns: Sequence[str] = ("map@10", "ndcg@10", "recall@10", "hit@10", "map@20"),
                     ) -> str:
    """Markdown: one row per ranker (overall), with the ratio of MAP@10 to `reference`."""
    s = result.summary.filter(pl.col("platform") == "all")
    columns = [c for c in columns if c in s.columns]
    ref = result.metric(reference, "map@10") if reference else float("nan")
    head = ["ranker", "lists", *columns, "coverage@10", "new-class slots", "recall@10 new classes",
            "MAP@10 cold users"]
    if reference:
        head.append(f"MAP@10 / {reference}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in s.sort(pl.col("map@10"), descending=True).iter_rows(named=True):
        name = row["ranker"]
        cells = [name, str(row["lists"]), *[f"{row[c]:.4f}" for c in columns],
                 f"{result.coverage[name]:.3f}", f"{result.new_class_share[name]:.3f}",
                 _fmt(row["recall@10_new_classes"]), _fmt(row["map@10_cold_users"])]
        if reference:
            cells.append(f"{row['map@10'] / ref:.2f}x" if ref and ref > 0 else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def platform_table(result: EvalResult, metric: str = "map@10") -> str:
    wide = (result.summary.select("ranker", "platform", metric)
            .pivot(on="platform", index="ranker", values=metric).sort("ranker"))
    others = sorted(c for c in wide.columns if c not in ("ranker", "all", *PLATFORMS))
    cols = [c for c in ("all", *PLATFORMS, *others) if c in wide.columns]
    lines = ["| ranker | " + " | ".join(f"{metric} {c}" for c in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for row in wide.iter_rows(named=True):
        lines.append(f"| {row['ranker']} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, title: str, path) -> None:
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_map_by_k(result: EvalResult, path) -> None:
    plt = _pyplot()
    s = result.summary.filter(pl.col("platform") == "all")
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in s.iter_rows(named=True):
        ax.plot(result.settings.ks, [row[f"map@{k}"] for k in result.settings.ks], marker="o",
                label=row["ranker"])
    ax.set_xlabel("K")
    ax.set_ylabel("MAP@K")
    _finish(plt, fig, ax, "MAP@K on the held-out days", path)


def plot_calibration(tables: dict[str, list[dict]], path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, table in tables.items():
        xs = [r["mean_predicted"] for r in table]
        ys = [r["actual_rate"] for r in table]
        top = max(top, *xs, *ys)
        ax.plot(xs, ys, marker="o", label=name)
    ax.plot([0, top], [0, top], ls="--", color="grey", label="perfect")
    ax.set_xlabel("mean predicted take probability (decile)")
    ax.set_ylabel("actual take rate")
    _finish(plt, fig, ax, "Calibration of the take head", path)


__all__ = [
    "EvalSettings", "EvalResult", "ListBatch", "Ranker", "ModelRanker", "PopularityRanker",
    "torch_score_fn", "list_context", "mapped_list_context", "usual_hour", "build_lists", "evaluate", "head_metrics",
    "comparison_table", "platform_table", "plot_map_by_k", "plot_calibration",
]
