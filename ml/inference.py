"""Daily batch inference: the home-screen rows of every active user, per platform, by the champion.

For feature date D (the day whose events are in the gold tables) the rows are served on D + 1:

* users: every user active in the last 28 days (`workouts_28d > 0`) plus the users who signed up
  on D, with their `user_features_daily` row of D (and their instructor affinities);
* platforms: the app for everyone, the bike / tread for users who own one or used it;
* candidates: gold `scoring_candidates` of D for the platform (classes released by the end of
  D, so the newest classes are eligible), minus what the user took in the last `exclude_days`;
* rows: the same model scored under different contexts (`RowSpec`): "For you" at the user's
  usual hour on the platform, "Start your morning with..." at 7h, "End your day with..." at
  20h, and, for users who worked out on D, "Recover from yesterday's ride" scored as the class
  right after that workout. Top-K per row by P(take), at most `max_per_instructor` classes of
  one instructor per row, and no class twice on one screen (`distinct_rows`).

Mapped data (`InferenceSettings(dataset="mapped")`, any interaction log imported through a
mapping file): users active in the last 28 days (`events_28d > 0`) or first seen on D; every
platform of the day's scoring_candidates for every such user; the context is the evaluation's
(`ml.evaluation.mapped_list_context`: the user's usual hour, else the day's most common one, and
the ctx_* values of the user's latest take); rows `MAPPED_ROWS` ("For you"; hour rows such as
"morning" work too, the recent-state row does not: it needs the fitness prev_* context); no
per-instructor cap (there is no instructor) unless `cap_column` names an item column to cap by.
The output rows have the same schema.

Users stream through in batches (`iter_user_batches`), each scored by a `BatchScorer` in a Ray
actor (or in-process), so memory depends on the batch size, not on the number of users.
Scoring is exhaustive and factorized by side (`ml.factorized`); a DCN model falls back to
scoring explicit pairs. No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from ml.evaluation import list_context, usual_hour
from ml.factorized import FactorizedDLRM, factorized_score_matrix
from ml.features import AFFINITY_COLUMN, DATASETS, PLATFORMS, Encoders
from ml.gold_reader import _affinity, _scan, class_catalogue, class_popularity_at, table_uri
from ml.pairs import PairEncoder, score_matrix

# The recommendations table (one Delta partition per serve_date).
RECOMMENDATION_SCHEMA = pa.schema([
    ("serve_date", pa.date32()),
    ("feature_date", pa.date32()),
    ("user_id", pa.string()),
    ("platform", pa.string()),
    ("row_id", pa.string()),
    ("row_title", pa.string()),
    ("row_rank", pa.int32()),
    ("rank", pa.int32()),
    ("class_id", pa.string()),
    ("score", pa.float32()),
    ("model_version", pa.int32()),
    ("generated_at", pa.timestamp("us", tz="UTC")),
])
POPULAR_SCHEMA = pa.schema([
    ("serve_date", pa.date32()), ("platform", pa.string()), ("rank", pa.int32()),
    ("class_id", pa.string()), ("score", pa.float32()),
])
_ACTIVITY = {"cycling": "ride", "running": "run", "walking": "walk", "strength": "strength class",
             "yoga": "yoga", "stretching": "stretch", "meditation": "meditation",
             "cardio": "cardio class", "pilates": "pilates class"}


class InferenceError(RuntimeError):
    """Inference cannot run: no champion, no features for the day, no candidates."""


@dataclass(frozen=True)
class RowSpec:
    """A home-screen row: the model scored under one context.

    hour: the hour the row assumes; None = the user's usual hour on the platform (the
        platform's most common usual hour for a user who has none yet).
    after_last_workout: the recent-state row: only users who worked out on the feature date,
        scored as the class right after that workout (prev_* context = that workout).
    """

    row_id: str
    title: str
    hour: int | None = None
    after_last_workout: bool = False


DEFAULT_ROWS = (
    RowSpec("for_you", "For you"),
    RowSpec("morning", "Start your morning with...", hour=7),
    RowSpec("evening", "End your day with...", hour=20),
    RowSpec("recover", "Recover from yesterday's {activity}", after_last_workout=True),
)
# Mapped data: the rows that need no fitness column.
MAPPED_ROWS = (RowSpec("for_you", "For you"),)


@dataclass(kw_only=True)
class InferenceSettings:
    """rows / platforms None: the dataset's defaults (fitness: DEFAULT_ROWS and PLATFORMS;
    mapped: MAPPED_ROWS and every platform of the day's scoring_candidates).
    max_per_instructor: at most this many classes of one `cap_column` value per row; cap_column
    None: "instructor_id" for fitness, no cap for mapped (set e.g. "item_attr_artist")."""

    rows: tuple[RowSpec, ...] | None = None
    top_k: int = 10
    max_per_instructor: int = 2
    exclude_days: int = 14  # no class the user took in these days (the evaluation's setting)
    distinct_rows: bool = True  # a class shown in a higher row is not repeated lower on the screen
    users_per_batch: int = 512
    # bf16: the large matmuls in bfloat16, ~1.8x faster on this CPU with 99.4% of the top-10
    # lists equal to fp32 (benchmarks/inference_bench.py); fp32 for exact scores
    precision: str = "bf16"
    popular_k: int = 20
    popular_days: int = 7
    platforms: tuple[str, ...] | None = None
    dataset: str = "fitness"  # or "mapped"
    cap_column: str | None = None

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        mapped = self.dataset == "mapped"
        if self.rows is None:
            self.rows = MAPPED_ROWS if mapped else DEFAULT_ROWS
        if self.platforms is None and not mapped:
            self.platforms = PLATFORMS
        if self.cap_column is None and not mapped:
            self.cap_column = "instructor_id"
        if mapped and any(r.after_last_workout for r in self.rows):
            raise ValueError("the recent-state row (after_last_workout) needs the fitness prev_* "
                             "context: not available on mapped data")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.top_k < 1 or self.max_per_instructor < 1 or self.users_per_batch < 1:
            raise ValueError("top_k, max_per_instructor and users_per_batch must be >= 1")
        if len({r.row_id for r in self.rows}) != len(self.rows):
            raise ValueError("row ids must be unique")


@dataclass(frozen=True)
class ModelRef:
    """Where a scoring model lives (MLflow), so each Ray actor loads it itself."""

    model_uri: str
    version: int
    tracking_uri: str | None = None

    def load(self) -> tuple[torch.jit.ScriptModule, Encoders, tuple[str, ...]]:
        from ml import tracking

        if self.tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(self.tracking_uri)
        module, encoders, heads = tracking.load_torchscript(self.model_uri)
        module.eval()
        return module, encoders, heads


# ---------------------------------------------------------------------------------------------
# Inputs of a day


@dataclass
class DayInputs:
    """What every batch shares: candidates per platform, popular fallback, default hours."""

    feature_date: dt.date
    serve_date: dt.date
    candidates: dict[str, pl.DataFrame]  # platform -> class_id + catalogue + class_ popularity
    popular: pl.DataFrame  # POPULAR_SCHEMA
    default_hour: dict[str, int]
    n_users: int


def _active(lf: pl.LazyFrame, feature_date: dt.date, dataset: str = "fitness") -> pl.LazyFrame:
    if dataset == "mapped":
        return lf.filter((pl.col("feature_date") == feature_date)
                         & ((pl.col("events_28d").fill_null(0) > 0)
                            | (pl.col("days_since_first_seen") == 0)))
    return lf.filter((pl.col("feature_date") == feature_date)
                     & ((pl.col("workouts_28d").fill_null(0) > 0) | (pl.col("days_since_signup") == 0)))


def load_day(lakehouse_uri: str, feature_date: dt.date, settings: InferenceSettings,
             storage_options: dict | None = None) -> DayInputs:
    so = storage_options or None
    mapped = settings.dataset == "mapped"
    serve = feature_date + dt.timedelta(days=1)
    uf = _scan(table_uri(lakehouse_uri, "gold", "user_features_daily"), so)
    names = set(uf.collect_schema().names())
    cand = (_scan(table_uri(lakehouse_uri, "gold", "scoring_candidates"), so)
            .filter(pl.col("feature_date") == feature_date).select("platform", "class_id").collect())
    platforms = settings.platforms
    if platforms is None:  # mapped: every platform with candidates that day
        platforms = tuple(sorted(cand["platform"].unique().to_list()))
    if mapped:  # one usual hour per user, over every platform
        hour_of = {p: "usual_hour" for p in platforms} if "usual_hour" in names else {}
    else:
        hour_of = {p: f"usual_hour_{p}" for p in platforms if f"usual_hour_{p}" in names}
    hour_cols = sorted(set(hour_of.values()))
    summary = _active(uf, feature_date, settings.dataset).select(
        pl.len().alias("_users"),
        *[pl.col(c).round().cast(pl.Int32).drop_nulls().mode().min().alias(c)
          if mapped else pl.col(c).round().cast(pl.Int32).drop_nulls().mode().first().alias(c)
          for c in hour_cols]).collect()
    n_users = int(summary["_users"][0])
    if n_users == 0:
        raise InferenceError(
            f"gold/user_features_daily has no active user for feature_date {feature_date}: "
            "materialize that day's features first")
    # a user with no usual hour on a platform yet gets its most common one (else the evening)
    default_hour = {p: int(summary[hour_of[p]][0])
                    if p in hour_of and summary[hour_of[p]][0] is not None else 18
                    for p in platforms}

    if cand.height == 0:
        raise InferenceError(f"gold/scoring_candidates has no candidate for feature_date {feature_date}")
    cfeat = class_popularity_at(lakehouse_uri, so, feature_date, settings.dataset)
    catalogue = class_catalogue(lakehouse_uri, so, settings.dataset)
    candidates = {}
    for p in platforms:
        c = (cand.filter(pl.col("platform") == p).select("class_id")
             .join(catalogue, on="class_id", how="left").join(cfeat, on="class_id", how="left")
             .sort("class_id"))
        if c.height:
            candidates[p] = c

    # popular fallback: workouts per class and platform over the last days, among candidates
    ex = _scan(table_uri(lakehouse_uri, "gold", "training_examples"), so)
    start = feature_date - dt.timedelta(days=settings.popular_days - 1)
    pop = (ex.filter(pl.col("event_date").is_between(start, feature_date) & (pl.col("label_take") == 1))
           .group_by("platform", "class_id").len("workouts").collect()
           .join(cand, on=["platform", "class_id"], how="semi")
           .sort(["platform", "workouts", "class_id"], descending=[False, True, False])
           .with_columns(pl.col("workouts").rank("ordinal", descending=True).over("platform").alias("rank"))
           .filter(pl.col("rank") <= settings.popular_k))
    popular = pl.DataFrame({
        "serve_date": [serve] * pop.height, "platform": pop["platform"],
        "rank": pop["rank"].cast(pl.Int32), "class_id": pop["class_id"],
        "score": pop["workouts"].cast(pl.Float32),
    })
    return DayInputs(feature_date=feature_date, serve_date=serve, candidates=candidates,
                     popular=popular, default_hour=default_hour, n_users=n_users)


def iter_user_batches(lakehouse_uri: str, feature_date: dt.date, settings: InferenceSettings,
                      storage_options: dict | None = None) -> Iterator[pl.DataFrame]:
    """The active users' feature rows of the day, `users_per_batch` at a time (streamed)."""
    uf = _scan(table_uri(lakehouse_uri, "gold", "user_features_daily"), storage_options or None)
    lf = _active(uf, feature_date, settings.dataset).sort("user_id")
    yield from lf.collect_batches(chunk_size=settings.users_per_batch)


def user_state(lakehouse_uri: str, feature_date: dt.date, users: pl.DataFrame,
               settings: InferenceSettings, storage_options: dict | None = None
               ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(users with their instructor affinities as a list column, classes taken in the exclusion
    window as (user_id, class_id)), for one batch of users."""
    so = storage_options or None
    ids = users["user_id"].to_list()
    aff = None if settings.dataset == "mapped" else _affinity(lakehouse_uri, so)
    if aff is not None:
        per_user = (aff.filter((pl.col("feature_date") == feature_date) & pl.col("user_id").is_in(ids))
                    .group_by("user_id")
                    .agg(pl.struct("instructor_id", "share_56d", "workouts_56d").alias(AFFINITY_COLUMN))
                    .collect())
        users = users.join(per_user, on="user_id", how="left")
    start = feature_date - dt.timedelta(days=settings.exclude_days - 1)
    taken = (_scan(table_uri(lakehouse_uri, "gold", "training_examples"), so)
             .filter(pl.col("event_date").is_between(start, feature_date)
                     & (pl.col("label_take") == 1) & pl.col("user_id").is_in(ids))
             .select("user_id", "class_id").unique().collect()) if settings.exclude_days > 0 \
        else pl.DataFrame(schema={"user_id": pl.Utf8, "class_id": pl.Utf8})
    return users, taken


def platforms_used(users: pl.DataFrame, platform: str, dataset: str = "fitness") -> pl.Series:
    """Whether each user uses the platform: the app for everyone; a device if owned or used.
    Mapped data: every platform for everyone (no per-platform usage in the user features)."""
    if platform == "app" or dataset == "mapped":
        return pl.Series([True] * users.height)
    owns = users[f"owns_{platform}"].fill_null(False) if f"owns_{platform}" in users.columns \
        else pl.Series([False] * users.height)
    used = usual_hour(users, platform).is_not_null()
    return (owns | used).alias("uses")


# ---------------------------------------------------------------------------------------------
# Ranking


def top_k_capped(scores: np.ndarray, groups: np.ndarray | None, k: int, cap: int) -> np.ndarray:
    """[n, k] column indices of the best scores per row, at most `cap` per group (instructor),
    -1 where fewer remain; -inf scores are never chosen. `groups`: [C] int codes >= 0, or None
    for no cap."""
    n, C = scores.shape
    if groups is None:
        kk = min(k, C)
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < C else np.tile(np.arange(C), (n, 1))
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
        idx = np.where(np.isfinite(np.take_along_axis(scores, idx, axis=1)), idx, -1)
        out = np.full((n, k), -1, dtype=np.int64)
        out[:, :kk] = idx
        return out
    pool = min(C, k * (1 + 5 * (cap < k)))  # enough depth for the cap to bite
    part = np.argpartition(-scores, pool - 1, axis=1)[:, :pool] if pool < C else np.tile(np.arange(C), (n, 1))
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)  # [n, pool] best first
    g = groups[idx]
    onehot = g[:, :, None] == np.arange(groups.max() + 1)[None, None, :]
    seen = np.take_along_axis(np.cumsum(onehot, axis=1), g[:, :, None], axis=2)[..., 0]
    keep = (seen <= cap) & np.isfinite(np.take_along_axis(scores, idx, axis=1))
    slot = np.cumsum(keep, axis=1)
    out = np.full((n, k), -1, dtype=np.int64)
    rows, cols = np.nonzero(keep & (slot <= k))
    out[rows, slot[rows, cols] - 1] = idx[rows, cols]
    return out


@dataclass
class _Platform:
    frame: pl.DataFrame
    side: object
    class_ids: np.ndarray
    groups: np.ndarray | None
    index: dict
    cs: dict | None = None


class BatchScorer:
    """Scores batches of users into recommendation rows (one instance per Ray actor)."""

    def __init__(self, module: torch.nn.Module, encoders: Encoders, heads: Sequence[str],
                 day: DayInputs, settings: InferenceSettings, model_version: int) -> None:
        self.settings, self.day, self.version = settings, day, int(model_version)
        if encoders.spec.dataset != settings.dataset:
            raise InferenceError(f"the model was trained on {encoders.spec.dataset!r} data; "
                                 f"the inference settings are for {settings.dataset!r} data")
        self.module = module
        self.pairs = PairEncoder(encoders)
        dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
        try:
            self.fast: FactorizedDLRM | None = FactorizedDLRM(
                module.state_dict(), encoders.spec, heads, head=heads[0], dtype=dtype)
        except ValueError:
            self.fast = None  # a DCN model: explicit pairs
        self.platforms: dict[str, _Platform] = {}
        for p, frame in day.candidates.items():
            side = self.pairs.encode_classes(frame.with_columns(pl.lit(day.serve_date).alias("event_date")))
            ids = np.array(frame["class_id"].to_list(), dtype=object)
            groups = None
            if settings.cap_column is not None and settings.cap_column in frame.columns:
                inst = frame[settings.cap_column].cast(pl.Utf8).to_list()
                codes = {v: i for i, v in enumerate(sorted({v for v in inst if v is not None}))}
                groups = np.array([codes[v] if v is not None else len(codes) + j
                                   for j, v in enumerate(inst)], dtype=np.int64)
            elif settings.cap_column is not None and settings.dataset == "mapped":
                raise InferenceError(f"cap_column {settings.cap_column!r} is not an item column "
                                     f"(have: {frame.columns})")
            self.platforms[p] = _Platform(frame, side, ids, groups, {c: j for j, c in enumerate(ids)},
                                          self.fast.class_side(side) if self.fast else None)
        self.pairs_scored = 0

    def _logits(self, users: pl.DataFrame, plat: _Platform) -> np.ndarray:
        side = self.pairs.encode_users(users)
        self.pairs_scored += users.height * len(plat.class_ids)
        if self.fast is not None:
            return factorized_score_matrix(self.fast, self.pairs, side, plat.side, class_side=plat.cs)
        return score_matrix(lambda d, s: self.module(d, s), self.pairs, side, plat.side, head=0)

    def _context(self, users: pl.DataFrame, platform: str, row: RowSpec) -> pl.DataFrame:
        if row.hour is not None:
            hour: int | pl.Series = row.hour
        else:
            hour = usual_hour(users, platform).fill_null(self.day.default_hour[platform])
        ctx = list_context(users, platform, self.day.serve_date, hour, dataset=self.settings.dataset)
        if row.after_last_workout:
            ctx = ctx.with_columns(
                pl.col("last_discipline").alias("prev_discipline"),
                pl.col("last_body_focus").alias("prev_body_focus"),
                pl.col("last_duration_min").cast(pl.Int32).alias("prev_duration_min"),
                pl.lit(5.0).alias("minutes_since_prev"),
                pl.lit(2, pl.Int32).alias("position_in_session"),
            )
        return ctx

    def score(self, users: pl.DataFrame, taken: pl.DataFrame) -> pl.DataFrame:
        """Rows (RECOMMENDATION_SCHEMA) for this batch of users (with their affinity column)."""
        s = self.settings
        now = dt.datetime.now(dt.timezone.utc)
        out: list[pl.DataFrame] = []
        for p, plat in self.platforms.items():
            up = users.filter(platforms_used(users, p, s.dataset))
            if up.height == 0:
                continue
            # classes a row may not show: taken in the exclusion window, or (distinct_rows)
            # already shown in a row above on this screen
            pos = {u: i for i, u in enumerate(up["user_id"].to_list())}
            blocked = np.zeros((up.height, len(plat.class_ids)), dtype=bool)
            for u, cid in taken.filter(pl.col("user_id").is_in(list(pos))).iter_rows():
                j = plat.index.get(cid)
                if j is not None:
                    blocked[pos[u], j] = True
            for row_rank, row in enumerate(s.rows, start=1):
                ur = up
                if row.after_last_workout:
                    if "days_since_last_workout" not in ur.columns:
                        continue
                    ur = ur.filter(pl.col("days_since_last_workout") == 0)
                    if ur.height == 0:
                        continue
                logits = self._logits(self._context(ur, p, row), plat)
                at = np.array([pos[u] for u in ur["user_id"].to_list()], dtype=np.int64)
                logits[blocked[at]] = -np.inf
                top = top_k_capped(logits, plat.groups, s.top_k, s.max_per_instructor)
                ui, rank0 = np.nonzero(top >= 0)
                cj = top[ui, rank0]
                if s.distinct_rows:
                    blocked[at[ui], cj] = True
                titles = ([row.title.format(activity=_ACTIVITY.get(d or "", "workout"))
                           for d in ur["last_discipline"].to_list()]
                          if "{activity}" in row.title else [row.title] * ur.height)
                out.append(pl.DataFrame({
                    "user_id": np.array(ur["user_id"].to_list(), dtype=object)[ui],
                    "platform": p, "row_id": row.row_id,
                    "row_title": np.array(titles, dtype=object)[ui],
                    "row_rank": np.int32(row_rank), "rank": (rank0 + 1).astype(np.int32),
                    "class_id": plat.class_ids[cj],
                    "score": (1.0 / (1.0 + np.exp(-logits[ui, cj].astype(np.float64)))).astype(np.float32),
                }))
        if not out:
            return pl.from_arrow(RECOMMENDATION_SCHEMA.empty_table())
        rows = pl.concat(out).with_columns(
            pl.lit(self.day.serve_date).alias("serve_date"),
            pl.lit(self.day.feature_date).alias("feature_date"),
            pl.lit(self.version, pl.Int32).alias("model_version"),
            pl.lit(now).dt.replace_time_zone("UTC").dt.cast_time_unit("us").alias("generated_at"),
        )
        return rows.select(RECOMMENDATION_SCHEMA.names).cast(
            {"row_rank": pl.Int32, "rank": pl.Int32, "score": pl.Float32})


# ---------------------------------------------------------------------------------------------
# Running a day


@dataclass
class InferenceStats:
    users: int = 0
    batches: int = 0
    rows: int = 0
    pairs_scored: int = 0
    seconds: float = 0.0
    workers: int = 0


def _score_one(scorer: BatchScorer, lakehouse_uri: str, day: DayInputs, users: pl.DataFrame,
               settings: InferenceSettings, so: dict | None) -> tuple[pl.DataFrame, int]:
    users, taken = user_state(lakehouse_uri, day.feature_date, users, settings, so)
    before = scorer.pairs_scored
    return scorer.score(users, taken), scorer.pairs_scored - before


class _Actor:
    """Ray actor body: loads the model once, then scores the batches it is given."""

    def __init__(self, model: ModelRef, lakehouse_uri: str, day: DayInputs,
                 settings: InferenceSettings, so: dict | None, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        module, encoders, heads = model.load()
        self.scorer = BatchScorer(module, encoders, heads, day, settings, model.version)
        self.args = (lakehouse_uri, day, settings, so)

    def score(self, users: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        lakehouse_uri, day, settings, so = self.args
        return _score_one(self.scorer, lakehouse_uri, day, users, settings, so)


def run_inference(model: ModelRef, lakehouse_uri: str, feature_date: dt.date,
                  settings: InferenceSettings | None = None, *, storage_options: dict | None = None,
                  use_ray: bool = True, num_workers: int = 2, stats: InferenceStats | None = None,
                  loaded: tuple | None = None, log: Callable[[str], None] | None = None,
                  ) -> tuple[DayInputs, Iterator[pl.DataFrame]]:
    """(the day's shared inputs, an iterator of row frames, one per batch of users).

    With Ray, `num_workers` actors score batches in parallel; at most two batches per actor are
    in flight, so memory stays bounded. `loaded`: an already loaded (module, encoders, heads)
    for the in-process path. `stats` is filled in as the iterator is consumed."""
    settings = settings or InferenceSettings()
    so = storage_options or None
    stats = stats if stats is not None else InferenceStats()
    log = log or (lambda _m: None)
    day = load_day(lakehouse_uri, feature_date, settings, so)
    batches = iter_user_batches(lakehouse_uri, feature_date, settings, so)

    def local() -> Iterator[pl.DataFrame]:
        module, encoders, heads = loaded or model.load()
        scorer = BatchScorer(module, encoders, heads, day, settings, model.version)
        stats.workers = 1
        t0 = time.perf_counter()
        for users in batches:
            rows, pairs = _score_one(scorer, lakehouse_uri, day, users, settings, so)
            _account(stats, users, rows, pairs, t0)
            yield rows

    def on_ray() -> Iterator[pl.DataFrame]:
        import ray

        from ml.ray_training import init_ray

        init_ray()
        cpus = int(ray.available_resources().get("CPU", 1))
        n = max(1, min(num_workers, cpus))
        threads = max(1, cpus // n)
        actor_cls = ray.remote(num_cpus=threads)(_Actor)
        actors = [actor_cls.remote(model, lakehouse_uri, day, settings, so, threads) for _ in range(n)]
        stats.workers = n
        log(f"scoring {day.n_users} users on {n} Ray actor(s), {threads} thread(s) each")
        t0 = time.perf_counter()
        inflight: dict = {}
        free = list(range(n)) * 2
        it = iter(batches)
        try:
            while True:
                while free:
                    users = next(it, None)
                    if users is None:
                        break
                    a = free.pop()
                    inflight[actors[a].score.remote(users)] = (a, users.height)
                if not inflight:
                    break
                done, _ = ray.wait(list(inflight), num_returns=1)
                a, n_users = inflight.pop(done[0])
                free.append(a)
                rows, pairs = ray.get(done[0])
                _account(stats, n_users, rows, pairs, t0)
                yield rows
        finally:
            for actor in actors:
                ray.kill(actor)

    return day, (on_ray() if use_ray else local())


def _account(stats: InferenceStats, users, rows: pl.DataFrame, pairs: int, t0: float) -> None:
    stats.users += users if isinstance(users, int) else users.height
    stats.batches += 1
    stats.rows += rows.height
    stats.pairs_scored += pairs
    stats.seconds = time.perf_counter() - t0


__all__ = [
    "BatchScorer", "DEFAULT_ROWS", "MAPPED_ROWS", "DayInputs", "InferenceError", "InferenceSettings",
    "InferenceStats", "ModelRef", "POPULAR_SCHEMA", "RECOMMENDATION_SCHEMA", "RowSpec",
    "iter_user_batches", "load_day", "run_inference", "top_k_capped", "user_state",
]
