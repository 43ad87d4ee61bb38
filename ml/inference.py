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

What differs with the data is its `Dataset` (`ml.datasets`, `InferenceSettings.dataset`).
Mapped data (`InferenceSettings(dataset=MAPPED)`, any interaction log imported through a
mapping file): users active in the last 28 days (`events_28d > 0`) or first seen on D; every
platform of the day's scoring_candidates for every such user; the context is the evaluation's
(`Dataset.list_context`: the user's usual hour, else the day's most common one, and
the ctx_* values of the user's latest take); rows `MAPPED_ROWS` ("For you"; hour rows such as
"morning" work too, the recent-state row does not: it needs the fitness prev_* context); no
per-instructor cap (there is no instructor) unless `cap_column` names an item column to cap by.
The output rows have the same schema.

Users stream through in batches (`iter_user_batches`), each scored by a `ml.row_scorer.BatchScorer`
in a Ray actor (or in-process), so memory depends on the batch size, not on the number of users.
The rows, settings and schemas are `ml.rows`. No Dagster here.
"""


from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import polars as pl
import torch

from ml.features import Encoders
from ml.gold import GoldStore
from ml.row_scorer import BatchScorer
from ml.rows import DayInputs, InferenceError, InferenceSettings


@dataclass(frozen=True)
class ModelRef:
    """Where a scoring model lives (MLflow), so each Ray actor loads it itself."""

    model_uri: str
    version: int
    tracking_uri: str | None = None

    def load(self) -> tuple[torch.jit.ScriptModule, Encoders, tuple[str, ...]]:
        from ml import tracking

        module, encoders, heads = tracking.load_torchscript(self.model_uri,
                                                            tracking_uri=self.tracking_uri)
        module.eval()
        return module, encoders, heads


# ---------------------------------------------------------------------------------------------
# Inputs of a day


def load_day(gold: GoldStore, feature_date: dt.date, settings: InferenceSettings) -> DayInputs:
    """What every batch of the day shares: candidates, popular fallback, default hours."""
    ds = settings.dataset
    serve = feature_date + dt.timedelta(days=1)
    uf = gold.scan("user_features_daily")
    names = set(uf.collect_schema().names())
    cand = (gold.scan("scoring_candidates")
            .filter(pl.col("feature_date") == feature_date).select("platform", "class_id").collect())
    platforms = settings.platforms
    if platforms is None:  # every platform with candidates that day
        platforms = tuple(sorted(cand["platform"].unique().to_list()))
    hour_of = ds.usual_hour_columns(platforms, names)
    hour_cols = sorted(set(hour_of.values()))
    summary = ds.active_users(uf, feature_date).select(
        pl.len().alias("_users"), *[ds.most_common_hour(c) for c in hour_cols]).collect()
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
    cfeat = gold.class_popularity_at(feature_date, ds.popularity_columns)
    catalogue = ds.catalogue(gold)
    candidates = {}
    for p in platforms:
        c = (cand.filter(pl.col("platform") == p).select("class_id")
             .join(catalogue, on="class_id", how="left").join(cfeat, on="class_id", how="left")
             .sort("class_id"))
        if c.height:
            candidates[p] = c

    # popular fallback: the classes (among candidates) with the most workouts on the platform
    # over the last days; score = their share of the platform's workouts in that window (0-1,
    # like the model's P(take); a count would not compare)
    start = feature_date - dt.timedelta(days=settings.popular_days - 1)
    pop = (gold.takes(start, feature_date).group_by("platform", "class_id").len("workouts").collect()
           .with_columns((pl.col("workouts") / pl.col("workouts").sum().over("platform")).alias("share"))
           .join(cand, on=["platform", "class_id"], how="semi")
           .sort(["platform", "workouts", "class_id"], descending=[False, True, False])
           .with_columns(pl.col("workouts").rank("ordinal", descending=True).over("platform").alias("rank"))
           .filter(pl.col("rank") <= settings.popular_k))
    popular = pl.DataFrame({
        "serve_date": [serve] * pop.height, "platform": pop["platform"],
        "rank": pop["rank"].cast(pl.Int32), "class_id": pop["class_id"],
        "score": pop["share"].cast(pl.Float32),
    })
    return DayInputs(feature_date=feature_date, serve_date=serve, candidates=candidates,
                     popular=popular, default_hour=default_hour, n_users=n_users)


def iter_user_batches(gold: GoldStore, feature_date: dt.date,
                      settings: InferenceSettings) -> Iterator[pl.DataFrame]:
    """The active users' feature rows of the day, `users_per_batch` at a time (streamed)."""
    uf = gold.scan("user_features_daily")
    lf = settings.dataset.active_users(uf, feature_date).sort("user_id")
    yield from lf.collect_batches(chunk_size=settings.users_per_batch)


class UserState:
    """What a batch of users' rows need besides their features: their affinity rows (a list
    column) and the classes they took in the exclusion window, (user_id, class_id).

    The window's takes are read once, sorted by user, and each batch takes its slice: read per
    batch, every batch of 512 users scanned the window's examples again (at `large`, 14 days of
    2.7M examples a day, for each of 2,250 batches). `user_ids`: read only those users' takes
    (a few users on demand, one batch)."""

    def __init__(self, gold: GoldStore, feature_date: dt.date, settings: InferenceSettings,
                 user_ids: list[str] | None = None) -> None:
        self.gold, self.feature_date, self.settings = gold, feature_date, settings
        days = settings.exclude_days  # None: every earlier take (data without repeat consumption)
        if days is not None and days <= 0:
            self.taken = pl.DataFrame(schema={"user_id": pl.Utf8, "class_id": pl.Utf8})
            return
        start = dt.date.min if days is None else feature_date - dt.timedelta(days=days - 1)
        lf = gold.takes(start, feature_date)
        if user_ids is not None:
            lf = lf.filter(pl.col("user_id").is_in(user_ids))
        self.taken = lf.select("user_id", "class_id").drop_nulls("user_id").unique().sort("user_id").collect()

    def of(self, users: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        ids = users["user_id"]
        taken = self.taken
        if users.height and taken.height:  # the rows between the batch's first and last user
            col = taken["user_id"]
            lo = int(col.search_sorted(ids.min(), side="left"))
            hi = int(col.search_sorted(ids.max(), side="right"))
            taken = taken.slice(lo, hi - lo)
        taken = taken.filter(pl.col("user_id").is_in(ids.to_list()))
        return self.settings.dataset.with_affinity(self.gold, self.feature_date, users), taken


def user_state(gold: GoldStore, feature_date: dt.date, users: pl.DataFrame,
               settings: InferenceSettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(users with their affinity rows, classes taken in the exclusion window) for one batch
    of users (`UserState`; keep one `UserState` for many batches)."""
    return UserState(gold, feature_date, settings, users["user_id"].to_list()).of(users)


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
    nodes: int = 0  # the Ray nodes the actors ran on (> 1 on a cluster, RAY_ADDRESS)


def _score_one(scorer: BatchScorer, users: pl.DataFrame, taken: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    before = scorer.pairs_scored
    return scorer.score(users, taken), scorer.pairs_scored - before


def _retriever(retrieval, day: DayInputs, settings: InferenceSettings, ranker_version: int):
    """The retrieve-then-rank path's Retriever, or None for exhaustive scoring."""
    if settings.retrieve is None:
        return None
    if retrieval is None:
        raise InferenceError("InferenceSettings.retrieve is set: pass the retrieval model and "
                             "candidate index (ml.retrieval.RetrievalRef)")
    return retrieval.retriever(day, n=settings.retrieve, ranker_version=ranker_version,
                               popular=settings.retrieve_popular, new_days=settings.retrieve_new_days,
                               new_max=settings.retrieve_new_max, affinity=settings.retrieve_affinity,
                               affinity_classes=settings.retrieve_affinity_classes)


class _Actor:
    """Ray actor body: loads the model once, then scores the batches it is given."""

    def __init__(self, model: ModelRef, day: DayInputs, settings: InferenceSettings, threads: int,
                 retrieval=None) -> None:
        torch.set_num_threads(max(1, threads))
        module, encoders, heads = model.load()
        self.scorer = BatchScorer(module, encoders, heads, day, settings, model.version,
                                  _retriever(retrieval, day, settings, model.version))

    def score(self, users: pl.DataFrame, taken: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        return _score_one(self.scorer, users, taken)

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def run_inference(model: ModelRef, gold: GoldStore, feature_date: dt.date,
                  settings: InferenceSettings | None = None, *, use_ray: bool = True, num_workers: int = 2, stats: InferenceStats | None = None,
                  loaded: tuple | None = None, log: Callable[[str], None] | None = None,
                  retrieval=None) -> tuple[DayInputs, Iterator[pl.DataFrame]]:
    """(the day's shared inputs, an iterator of row frames, one per batch of users).

    With Ray, `num_workers` actors score batches in parallel; at most two batches per actor are
    in flight, so memory stays bounded. `loaded`: an already loaded (module, encoders, heads)
    for the in-process path. `stats` is filled in as the iterator is consumed. `retrieval`: an
    `ml.retrieval.RetrievalRef` (model + the day's index) when `settings.retrieve` is set; a
    missing, corrupt or mismatched index raises `ml.retrieval.IndexLoadError` before any row."""
    settings = settings or InferenceSettings()
    stats = stats if stats is not None else InferenceStats()
    log = log or (lambda _m: None)
    day = load_day(gold, feature_date, settings)
    # loaded and checked here, so a bad index fails before any actor starts (and before the read below)
    retriever = _retriever(retrieval, day, settings, model.version)
    state = UserState(gold, feature_date, settings)  # read here once; each batch gets its slice
    batches = (state.of(users) for users in iter_user_batches(gold, feature_date, settings))

    def local() -> Iterator[pl.DataFrame]:
        module, encoders, heads = loaded or model.load()
        scorer = BatchScorer(module, encoders, heads, day, settings, model.version, retriever)
        stats.workers, stats.nodes = 1, 1
        t0 = time.perf_counter()
        for users, taken in batches:
            rows, pairs = _score_one(scorer, users, taken)
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
        actors = [actor_cls.remote(model, day, settings, threads, retrieval) for _ in range(n)]
        stats.workers = n
        stats.nodes = len(set(ray.get([a.node.remote() for a in actors])))
        log(f"scoring {day.n_users} users on {n} Ray actor(s) on {stats.nodes} node(s), "
            f"{threads} thread(s) each")
        t0 = time.perf_counter()
        inflight: dict = {}
        free = list(range(n)) * 2
        it = iter(batches)
        try:
            while True:
                while free:
                    batch = next(it, None)
                    if batch is None:
                        break
                    a = free.pop()
                    inflight[actors[a].score.remote(*batch)] = (a, batch[0].height)
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
    "InferenceStats", "ModelRef", "UserState", "iter_user_batches", "load_day", "run_inference", "user_state",
]


class UserScorer:
    """A few users' rows on demand, in this process (the preview's challenger): the day's
    inputs and the model loaded once, then `rows(user_ids)` per request. Users not active on
    the feature date (`Dataset.active_users`) get no rows."""

    def __init__(self, model: ModelRef, gold: GoldStore, feature_date: dt.date,
                 settings: InferenceSettings | None = None) -> None:
        self.gold, self.settings = gold, settings or InferenceSettings()
        self.day = load_day(gold, feature_date, self.settings)
        module, encoders, heads = model.load()
        self.scorer = BatchScorer(module, encoders, heads, self.day, self.settings, model.version)

    def rows(self, user_ids: list[str]) -> pl.DataFrame:
        users = (self.settings.dataset.active_users(self.gold.scan("user_features_daily"), self.day.feature_date)
                 .filter(pl.col("user_id").is_in(user_ids)).collect())
        if not users.height:
            return pl.DataFrame()
        return _score_one(self.scorer, *user_state(self.gold, self.day.feature_date, users, self.settings))[0]
