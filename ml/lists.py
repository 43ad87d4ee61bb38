"""The held-out lists: the same lists, the same candidates, for every ranker.

A list is one (user, platform, day) of the held-out window where the user took at least one
class on that platform; its relevant set is the classes taken. With `list_unit="window"` (sparse
logs) a list is one (user, platform) over the whole window, ranked as of its first day, and its
relevant set is everything the user took there in the window. The candidates are the gold
`scoring_candidates` of that platform and serve day (released by the end of the day before),
minus the classes the user took in the `exclude_days` before (the product never re-recommends
them). Each ranker sees only what a daily batch list knows: user features as of the day before
and the context the list assumes ("For you": the user's usual hour on that platform,
`ml.context`).

What differs with the data is its `Dataset` (`ml.datasets`, `EvalSettings.dataset`).
Mapped data (`EvalSettings(dataset=MAPPED)`, any interaction log imported through a mapping
file): the platforms are those present in the held-out day's takes, the candidates the gold
scoring_candidates of each, and the list context is the user's usual hour (over all platforms;
else the most common usual hour of the day before: `ListBatch.default_hour`), the day's weekday
and, for each ctx_* column, the value of the user's latest take (`last_ctx_*`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from lakehouse.mapped.mapping import LIST_UNITS, EvaluationProtocol
from ml.datasets import FITNESS, Dataset
from ml.gold import GoldStore, user_kept
from ml.metrics import KS


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
    # the hour of a list whose user has no usual hour yet (`Dataset.list_default_hour`; None:
    # the ranker averages over several hours)
    default_hour: int | None = None
    dataset: Dataset = FITNESS  # whose list context the rankers score under


@dataclass(kw_only=True)
class EvalSettings:
    days: list[dt.date]
    user_fraction: float = 1.0  # share of users evaluated (stable hash, as in training)
    seed: int = 0
    # candidates leave out what the user took in the exclude_days before the list's day; None:
    # ever (data without repeat consumption)
    exclude_days: int | None = EvaluationProtocol.exclude_seen_days
    # fewer lists: the evaluation cannot conclude (the gate promotes nothing)
    min_lists: int = EvaluationProtocol.min_lists
    popularity_days: int = 7
    new_class_days: int = 3
    # cold user: fewer takes (`Dataset.activity_column`: workouts, events) before the day
    cold_user_workouts: int = 3
    # None: the dataset's (`Dataset.platforms`; None again: every platform with takes on the
    # evaluated day)
    platforms: tuple[str, ...] | None = None
    ks: tuple[int, ...] = KS
    dataset: Dataset = FITNESS
    # equal scores rank in a random order drawn from `seed` (False: by candidate id, which
    # favours whatever sorts first; kept for checks against a hand-computed ranking)
    random_ties: bool = True
    # "day": one list per user, platform and day; "window": one per user and platform over all
    # of `days`, ranked from the state before the first (`EvaluationProtocol.list_unit`)
    list_unit: str = EvaluationProtocol.list_unit

    def __post_init__(self) -> None:
        if self.platforms is None:
            self.platforms = self.dataset.platforms
        if self.list_unit not in LIST_UNITS:
            raise ValueError(f"list_unit must be one of {LIST_UNITS}, got {self.list_unit!r}")

    def list_days(self) -> list[tuple[dt.date, dt.date]]:
        """(first day, last day) of the takes each round of lists holds: every day alone, or
        the whole window once."""
        days = sorted(self.days)
        if self.list_unit == "window":
            return [(days[0], days[-1])] if days else []
        return [(d, d) for d in days]


def build_lists(gold: GoldStore, day: dt.date, settings: EvalSettings,
                through: dt.date | None = None) -> list[ListBatch]:
    """Every list of `day`, one `ListBatch` per platform with takes that day (see the module
    docstring). `through`: the lists of a window: the takes of `day`..`through` are relevant,
    ranked as of `day` (features of the day before, its candidates and context)."""
    ds = settings.dataset
    fdate = day - dt.timedelta(days=1)
    taken = gold.takes(day, through or day).collect()
    if settings.user_fraction < 1.0:
        keep = [user_kept(u, settings.user_fraction, settings.seed)
                for u in taken["user_id"].to_list()]
        taken = taken.filter(pl.Series(keep))
    if taken.height == 0:
        return []
    list_users = taken["user_id"].unique().to_list()

    uf = gold.scan("user_features_daily")
    ufeat = uf.filter((pl.col("feature_date") == fdate) & pl.col("user_id").is_in(list_users)).collect()
    ufeat = ds.with_affinity(gold, fdate, ufeat)
    since = dt.date.min if settings.exclude_days is None else day - dt.timedelta(days=settings.exclude_days)
    history = (
        gold.takes(since, fdate)
        .filter(pl.col("user_id").is_in(list_users)).select("user_id", "class_id").unique().collect()
    )
    pop = (
        gold.takes(day - dt.timedelta(days=settings.popularity_days), fdate)
        .group_by("platform", "class_id").len("workouts").collect()
    )
    cand = (
        gold.scan("scoring_candidates")
        .filter(pl.col("serve_date") == day).select("platform", "class_id").collect()
    )
    cfeat = gold.class_popularity_at(fdate, ds.popularity_columns)
    catalogue = ds.catalogue(gold)
    platforms = settings.platforms
    if platforms is None:  # the platforms of the day's takes
        platforms = tuple(sorted(taken["platform"].unique().to_list()))
    default_hour = ds.list_default_hour(gold, fdate)

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
        count = ds.activity_column
        wt = users[count] if count in users.columns else pl.Series([None] * U)
        cold = wt.fill_null(0).cast(pl.Int64).to_numpy() < settings.cold_user_workouts
        out.append(ListBatch(
            day=day, platform=platform, users=users, classes=c, relevant=relevant,
            n_relevant=n_rel, excluded=excluded, popularity=popularity, is_new_class=is_new,
            is_cold_user=cold, new_relevant=n_new, default_hour=default_hour, dataset=ds,
        ))
    return out


__all__ = ["EvalSettings", "ListBatch", "build_lists"]
