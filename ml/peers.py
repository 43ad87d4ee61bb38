"""Standard peers, fitted on the training window's takes only: EASE, item-kNN (cosine) and ALS
(`implicit`, where it installs). Each is a `Ranker` (`ml.rankers`) that every evaluation runs
beside the model, on the same lists.

A peer sees what a daily batch list knows: the user's takes from the start of the training window
to the day before the list (`GoldStore.takes`), scored against the items it was fitted on. Items
it never saw (a class released after the window) rank below every seen one; ties break at random
like every ranker's (`ml.evaluation`). A user with no takes in that span has no history to score
from: the peer ranks the list by popularity (`ListBatch.popularity`), as such a model is served,
rather than at random.

Each peer's one setting (EASE's L2, the neighbours kept by item-kNN, ALS's regularization) is
chosen on a validation window carved from the end of the training window: fitted on the days
before it, each candidate setting ranks the validation days' lists, the best MAP@10 wins, and the
winner is refitted on the whole window. The held-out days are never looked at. A peer that cannot
be fitted (no takes, one item, too many items for a dense item-item matrix, `implicit` missing)
is skipped with its reason (`Peers.skipped`), never scored as zeros.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from ml.gold import GoldStore
from ml.lists import EvalSettings, ListBatch

UNSEEN = -1e30  # the score of an item the peer was not fitted on: below all, still a candidate
MAX_DENSE_ITEMS = 15_000  # an item-item matrix beyond this is too big for a peer on one machine


@dataclass(frozen=True)
class Takes:
    """A binary user x item matrix of takes, with its id indexes."""

    users: dict[str, int]
    items: dict[str, int]
    matrix: sp.csr_matrix  # [users, items] float32, 1 where taken

    @classmethod
    def of(cls, frame: pl.DataFrame, items: dict[str, int] | None = None) -> "Takes":
        """From (user_id, class_id) rows; with `items`, on that item index (others dropped)."""
        pairs = frame.select("user_id", "class_id").unique()
        if items is None:
            ids = sorted(pairs["class_id"].unique().to_list())
            items = {c: j for j, c in enumerate(ids)}
        else:
            pairs = pairs.filter(pl.col("class_id").is_in(list(items)))
        user_ids = sorted(pairs["user_id"].unique().to_list())
        users = {u: i for i, u in enumerate(user_ids)}
        rows = np.array([users[u] for u in pairs["user_id"].to_list()], dtype=np.int64)
        cols = np.array([items[c] for c in pairs["class_id"].to_list()], dtype=np.int64)
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(items)))
        return cls(users, items, m)


# -- the models: fit(takes, setting) -> score(history [U, I]) -> [U, I] -------------------------

def fit_ease(takes: Takes, l2: float) -> Callable[[sp.csr_matrix], np.ndarray]:
    """EASE (Steck 2019): B = I - P diagMat(1 / diag(P)), P = (X'X + l2 I)^-1, diag(B) = 0."""
    g = (takes.matrix.T @ takes.matrix).toarray().astype(np.float64)
    g[np.diag_indices_from(g)] += l2
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    b = b.astype(np.float32)
    return lambda history: np.asarray(history @ b)


def fit_item_knn(takes: Takes, neighbours: int) -> Callable[[sp.csr_matrix], np.ndarray]:
    """Item-kNN: cosine similarity of the items' user columns, each item's `neighbours` most
    similar kept (0: all); a user's score for an item sums its similarity to the user's items."""
    x = takes.matrix
    norms = np.sqrt(np.asarray(x.multiply(x).sum(0)).ravel())
    xn = x @ sp.diags(1.0 / np.maximum(norms, 1e-12))
    s = (xn.T @ xn).toarray().astype(np.float32)
    np.fill_diagonal(s, 0.0)
    if 0 < neighbours < s.shape[0]:
        # keep, in each item's column, its `neighbours` most similar items
        cut = -np.partition(-s, neighbours - 1, axis=0)[neighbours - 1: neighbours, :]
        s = np.where(s >= cut, s, 0.0).astype(np.float32)
    return lambda history: np.asarray(history @ s)


def fit_als(takes: Takes, regularization: float, *, factors: int = 32, iterations: int = 15,
            seed: int = 0) -> Callable[[sp.csr_matrix], np.ndarray]:
    """ALS for implicit feedback (`implicit`), user factors recomputed from each list's history."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's own threads; BLAS threads inside would fight them
        model = AlternatingLeastSquares(factors=factors, regularization=regularization,
                                        iterations=iterations, random_state=seed,
                                        calculate_training_loss=False, num_threads=1)
        model.fit(takes.matrix, show_progress=False)
    items = np.asarray(model.item_factors)

    def score(history: sp.csr_matrix) -> np.ndarray:
        ids = np.arange(history.shape[0])
        users = np.asarray(model.recalculate_user(ids, history.tocsr()))
        return users.reshape(len(ids), -1) @ items.T

    return score


@dataclass(frozen=True)
class PeerSpec:
    name: str
    fit: Callable[..., Callable[[sp.csr_matrix], np.ndarray]]
    settings: tuple  # the candidate values of its one setting, tuned on the validation window
    needs: str | None = None  # a module that must import (else skipped, with the reason)
    dense: bool = True  # holds an item x item matrix (bounded by MAX_DENSE_ITEMS)


PEERS = (
    PeerSpec("ease", fit_ease, (10.0, 50.0, 200.0, 1000.0)),
    PeerSpec("item_knn", fit_item_knn, (20, 100, 0)),
    PeerSpec("als", fit_als, (0.01, 0.1, 1.0), needs="implicit", dense=False),
)


class PeerRanker:
    """A fitted peer as a `Ranker`: scores a list batch from its users' takes before the day."""

    def __init__(self, name: str, gold: GoldStore, takes: Takes,
                 score: Callable[[sp.csr_matrix], np.ndarray], history_start: dt.date) -> None:
        self.name, self.gold, self.takes, self._score = name, gold, takes, score
        self.history_start = history_start
        self._history: tuple[dt.date, pl.DataFrame] | None = None

    def history(self, day: dt.date) -> pl.DataFrame:
        """(user_id, class_id) taken from the window's start to the day before (cached per day)."""
        if self._history is None or self._history[0] != day:
            h = (self.gold.takes(self.history_start, day - dt.timedelta(days=1))
                 .select("user_id", "class_id").unique().collect())
            self._history = (day, h)
        return self._history[1]

    def score(self, batch: ListBatch) -> np.ndarray:
        h = self.history(batch.day)
        users = batch.users["user_id"].to_list()
        uidx = {u: i for i, u in enumerate(users)}
        h = h.filter(pl.col("user_id").is_in(users) & pl.col("class_id").is_in(list(self.takes.items)))
        rows = np.array([uidx[u] for u in h["user_id"].to_list()], dtype=np.int64)
        cols = np.array([self.takes.items[c] for c in h["class_id"].to_list()], dtype=np.int64)
        x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                          shape=(len(users), len(self.takes.items)))
        full = self._score(x)
        cand = np.array([self.takes.items.get(c, -1) for c in batch.classes["class_id"].to_list()])
        out = np.full((len(users), len(cand)), UNSEEN, dtype=np.float64)
        seen = cand >= 0
        out[:, seen] = full[:, cand[seen]]
        no_history = np.asarray(x.sum(axis=1)).ravel() == 0
        out[no_history] = np.asarray(batch.popularity, dtype=np.float64)[None, :]
        return out


@dataclass
class Peers:
    """The fitted peers, the setting each was tuned to, and the peers skipped with why."""

    rankers: list[PeerRanker] = field(default_factory=list)
    chosen: dict[str, dict] = field(default_factory=dict)  # name -> {setting, validation map@10s}
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason


def fit_peers(gold: GoldStore, train_window: tuple[dt.date, dt.date], settings: EvalSettings, *,
              validation_days: int = 7, peers: Sequence[PeerSpec] = PEERS, log=None) -> Peers:
    """Fit every peer on the takes of `train_window`, each tuned on its last `validation_days`
    (at most a third of the window) as the module docstring says. `settings` is the evaluation's
    (its dataset, exclusions, sampling); only its days are replaced by the validation days."""
    from ml.evaluation import evaluate  # evaluate ranks peers; peers tune with it

    start, end = train_window
    n_days = (end - start).days + 1
    n_val = max(1, min(validation_days, n_days // 3))
    val_start = end - dt.timedelta(days=n_val - 1)
    out = Peers()
    full = gold.takes(start, end).select("user_id", "class_id").collect()
    fit_part = gold.takes(start, val_start - dt.timedelta(days=1)).select("user_id", "class_id").collect()
    reason = _unfittable(full) or _unfittable(fit_part)
    if reason is None:  # each matrix built once, shared by every peer
        whole, part = Takes.of(full), Takes.of(fit_part)
        n_items = whole.matrix.shape[1]
    val_settings = dataclasses.replace(settings, days=[val_start + dt.timedelta(days=i) for i in range(n_val)])
    for spec in peers:
        why = reason or _missing(spec.needs)
        if why is None and spec.dense and n_items > MAX_DENSE_ITEMS:
            why = f"{n_items} items: more than {MAX_DENSE_ITEMS} for a dense item-item matrix"
        if why:
            out.skipped[spec.name] = why
            continue
        trials = [PeerRanker(f"{spec.name}[{v}]", gold, part, spec.fit(part, v), start)
                  for v in spec.settings]
        val = evaluate(gold, trials, val_settings)
        scores = {v: val.metric(t.name, "map@10") for v, t in zip(spec.settings, trials)}
        best = max(spec.settings, key=lambda v: (np.nan_to_num(scores[v], nan=-1.0), -spec.settings.index(v)))
        out.rankers.append(PeerRanker(spec.name, gold, whole, spec.fit(whole, best), start))
        out.chosen[spec.name] = {"setting": best, "validation_map@10": scores,
                                 "validation_days": f"{val_start}..{end}"}
        if log:
            log(f"peer {spec.name}: setting {best} (validation MAP@10 "
                + ", ".join(f"{v}: {s:.4f}" for v, s in scores.items()) + ")")
    return out


def _unfittable(frame: pl.DataFrame) -> str | None:
    if frame.height == 0:
        return "no takes in the training window"
    if frame["class_id"].n_unique() < 2:
        return "fewer than 2 items taken in the training window"
    return None


def _missing(module: str | None) -> str | None:
    if module is None:
        return None
    import importlib.util

    return None if importlib.util.find_spec(module) else f"`{module}` is not installed"


__all__ = ["MAX_DENSE_ITEMS", "PEERS", "PeerRanker", "PeerSpec", "Peers", "Takes", "fit_als",
           "fit_ease", "fit_item_knn", "fit_peers"]
