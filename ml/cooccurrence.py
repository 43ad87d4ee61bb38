"""A collaborative signal: how often the candidate was taken together with the user's recent items.

    recent_item_cooccurrence(user, c, day d) = mean over the user's recent items r of sim(c, r)

* the recent items: the spec's `recent_items` columns (the last takes, as of the day before d);
  a null one is skipped, no recent item at all is null (the spec fills 0);
* sim(c, r) = both(c, r) / (sqrt(takers(c) * takers(r)) + SHRINK): users who took both over
  the geometric mean of their takers (cosine of the take vectors, shrunk toward 0 for rare
  pairs), kept only for c's `NEIGHBOURS` most similar items (ties at the cut kept) and 0
  otherwise; sim(c, c) = 0.

Point in time: a training example of day d is scored with the takes of the days before d
(`point_in_time`), never with its own or a later take. The model carries the neighbours as of
its last training day (`Neighbours`, saved in the encoders) and scores every later list with
them, as the peers are fitted on the training window.

numpy only (no polars, no torch): this module travels inside the logged model with
`ml/features.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np

COOCCURRENCE = "recent_item_cooccurrence"
# 512: on MovieLens-100K's training window the feature alone separates takes from sampled
# negatives at AUC 0.57 with 32 neighbours, 0.63 with 128, 0.67 with 256, 0.72 with 512 and 0.74
# with all (the held-out days not looked at); 512 keeps the saved encoders to a few MB
NEIGHBOURS = 512
SHRINK = 10.0
# The counts are a dense items x items int32 matrix while training: 10k items = 400 MB.
MAX_ITEMS = 10_000


class CooccurrenceError(ValueError):
    """Input the co-occurrence cannot be computed from (too many items)."""


@dataclass
class Neighbours:
    """Each item's most similar items, as fitted at the end of the training window."""

    items: list[str]  # every item named below; its position is its code
    rows: dict[str, tuple[list[int], list[float]]]  # item -> (codes of neighbours, sims)

    @classmethod
    def empty(cls) -> "Neighbours":
        return cls(items=[], rows={})

    # -- persistence (inside the encoders' JSON) -------------------------------------------
    def to_dict(self) -> dict:
        # a float16 value's shortest repr reads back to the same float16 (`_half`)
        return {"items": self.items,
                "rows": {k: [list(v[0]), [float(str(np.float16(s))) for s in v[1]]]
                         for k, v in self.rows.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Neighbours":
        return cls(items=list(d["items"]),
                   rows={k: ([int(i) for i in v[0]], _half(np.asarray(v[1], dtype=np.float64)).tolist())
                         for k, v in d["rows"].items()})

    # -- scoring ----------------------------------------------------------------------------
    @cached_property
    def _index(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.items)}

    def codes(self, values: Iterable[str | None]) -> np.ndarray:
        """Codes of item ids: -1 for null, len(items) for an item without neighbours."""
        index, unknown = self._index, len(self.items)
        return np.array([-1 if v is None else index.get(v, unknown) for v in values], dtype=np.int64)

    def similarity_rows(self, classes: Sequence[str | None]) -> np.ndarray:
        """[len(classes), len(items) + 1] sim of each class to every item (last column: an
        unknown item, 0)."""
        out = np.zeros((len(classes), len(self.items) + 1), dtype=np.float32)
        for i, c in enumerate(classes):
            if c is not None and c in self.rows:
                codes, sims = self.rows[c]
                out[i, codes] = sims
        return out

    def score(self, classes: Sequence[str | None], recent: Sequence[Sequence[str | None]]) -> np.ndarray:
        """The feature of each (class, recent items) row: `classes` [n], `recent` one
        sequence per recent-item column, each [n]; NaN where no recent item."""
        codes = np.column_stack([self.codes(col) for col in recent]) if recent else \
            np.full((len(classes), 0), -1, dtype=np.int64)
        return mean_similarity(self.similarity_rows(classes), codes)


def _half(values: np.ndarray) -> np.ndarray:
    """Values at float16 precision, as float32."""
    return values.astype(np.float16).astype(np.float32)


def _mean(vals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The mean over the last axis of `vals` where `valid` (NaN where none is)."""
    n = valid.sum(axis=-1)
    total = np.where(valid, vals, 0.0).sum(axis=-1, dtype=np.float64)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def mean_similarity(rows: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Row i's mean of rows[i, codes[i, j]] over its codes >= 0 (NaN where none): rows
    [n, I + 1] similarities, codes [n, R] (-1 = no recent item)."""
    valid = codes >= 0
    return _mean(np.take_along_axis(rows, np.where(valid, codes, 0), axis=1), valid)


def pair_similarity(rows: np.ndarray, codes: np.ndarray, cidx: np.ndarray | None = None) -> np.ndarray:
    """[n_users, n_classes] `mean_similarity` of every (user, class) pair: rows [C, I + 1]
    (the classes'), codes [n, R] (the users' recent items); with `cidx` [n, m] (class rows),
    [n, m] of each user's own classes only."""
    valid = codes >= 0
    if cidx is None:
        cidx = np.arange(rows.shape[0])[None, :]
    vals = rows[cidx[:, :, None], np.where(valid, codes, 0)[:, None, :]]  # [n, m, R]
    return _mean(vals, np.broadcast_to(valid[:, None, :], vals.shape))


class _Counts:
    """Running counts over the takes added so far: takers per item, users per item pair."""

    def __init__(self, items: Sequence[str]) -> None:
        if len(items) > MAX_ITEMS:
            raise CooccurrenceError(
                f"{COOCCURRENCE}: {len(items)} items, more than the {MAX_ITEMS} its dense counts "
                f"allow; leave the feature out with model.drop_features: [{COOCCURRENCE!r}]")
        self.items = list(items)
        self.index = {v: i for i, v in enumerate(self.items)}
        n = len(self.items)
        self.both = np.zeros((n, n), dtype=np.int32)
        self.takers = np.zeros(n, dtype=np.int64)
        self.taken = np.zeros(0, dtype=np.int64)  # sorted user * n + item of every take so far
        self.before = None  # the same as a sparse users x items matrix

    def add_day(self, users: np.ndarray, items: np.ndarray, n_users: int) -> None:
        """One day's takes (user and item codes); an item the user took before counts once."""
        import scipy.sparse as sp  # training only: the served model needs numpy alone

        n = len(self.items)
        keys = np.unique(users * n + items)
        pos = np.searchsorted(self.taken, keys)
        seen = (pos < self.taken.size) & (self.taken[np.minimum(pos, self.taken.size - 1)] == keys) \
            if self.taken.size else np.zeros(keys.size, dtype=bool)
        new = keys[~seen]
        if not new.size:
            return
        fresh = sp.csr_matrix((np.ones(new.size, dtype=np.int32), (new // n, new % n)), shape=(n_users, n))
        if self.before is None:
            self.before = sp.csr_matrix((n_users, n), dtype=np.int32)
        # pairs (new, earlier) both ways, and (new, new): users x items products, in sparse form,
        # added where they are (a dense items x items temporary per day was most of the time)
        cross = fresh.T @ self.before
        pairs = (cross + cross.T + fresh.T @ fresh).tocoo()
        np.add.at(self.both, (pairs.row, pairs.col), pairs.data.astype(np.int32, copy=False))
        self.takers += np.asarray(fresh.sum(axis=0)).ravel()
        self.taken = np.insert(self.taken, pos[~seen], new)
        self.before = self.before + fresh

    def _raw_rows(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sims [len(c), I] of the known items `c` before rounding, each row's cut: the value
        its NEIGHBOURS-th largest rounds to, -inf where the row has no more items than that).
        Rounding to float16 keeps the order, so the k-th largest of the rounded row is the
        rounded k-th largest: a row is rounded only where it is read."""
        n = len(self.items)
        sims = self.both[c] / (np.sqrt(self.takers[c][:, None] * self.takers[None, :]) + SHRINK)
        sims[np.arange(len(c)), c] = 0.0
        if n <= NEIGHBOURS:
            return sims, np.full(len(c), -np.inf)
        return sims, _half(np.partition(sims, n - NEIGHBOURS, axis=1)[:, n - NEIGHBOURS])

    def query_values(self, classes: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """The feature of each query: `classes` [q] item codes (-1: unknown), `recent` [q, R]
        codes (-1: none); the same as `mean_similarity(similarity_rows(classes), recent)`
        without whole rounded rows (a day's queries name a few thousand classes)."""
        valid = recent >= 0
        vals = np.zeros(recent.shape, dtype=np.float32)
        unique, inverse = np.unique(classes, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(0, len(unique) + 1024, 1024))
        for k, start in enumerate(range(0, len(unique), 1024)):  # bounded temporaries
            c = unique[start:start + 1024]
            qs = order[bounds[k]:bounds[k + 1]]
            known = c[inverse[qs] - start] >= 0
            qs = qs[known]
            if not qs.size or not len(self.items):
                continue
            sims, cut = self._raw_rows(np.maximum(c, 0))
            at = inverse[qs] - start
            v = _half(sims[at[:, None], np.where(valid[qs], recent[qs], 0)])
            vals[qs] = np.where(v >= cut[at][:, None], v, 0.0)
        return _mean(vals, valid)

    def similarity_rows(self, codes: np.ndarray) -> np.ndarray:
        """[len(codes), I + 1] sims of the items `codes` (-1: unknown, all 0), cut to each row's
        NEIGHBOURS largest (ties at the cut kept)."""
        n = len(self.items)
        out = np.zeros((len(codes), n + 1), dtype=np.float32)
        known = codes >= 0
        if not known.any() or n == 0:
            return out
        rows = np.flatnonzero(known)
        for start in range(0, len(rows), 1024):  # bounded temporaries for a large catalogue
            r = rows[start:start + 1024]
            sims, cut = self._raw_rows(codes[r])
            sims = _half(sims)
            out[r, :n] = np.where(sims >= cut[:, None], sims, 0.0)
        return out

    def neighbours(self) -> Neighbours:
        rows: dict[str, tuple[list[int], list[float]]] = {}
        sims = self.similarity_rows(np.arange(len(self.items)))[:, :-1] if self.items else np.zeros((0, 0))
        used = np.flatnonzero((sims > 0).any(axis=0) | (sims > 0).any(axis=1))
        remap = np.full(len(self.items), -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        for i in np.flatnonzero((sims > 0).any(axis=1)):
            nz = np.flatnonzero(sims[i] > 0)
            rows[self.items[i]] = (remap[nz].tolist(), sims[i, nz].astype(np.float64).tolist())
        return Neighbours(items=[self.items[i] for i in used], rows=rows)


def point_in_time(items: Sequence[str], take_day: np.ndarray, take_user: np.ndarray,
                  take_item: np.ndarray, query_day: np.ndarray, query_class: np.ndarray,
                  query_recent: np.ndarray) -> tuple[np.ndarray, Neighbours]:
    """The feature of each query, from the takes of the days before the query's day, and the
    neighbours after every take.

    items: every item named (a code is a position in it; -1 is null). Takes: `take_day` (any
    integer day numbers), `take_user` (user codes, 0..n_users - 1) and `take_item` (codes), one
    per take. Queries: `query_day`, `query_class` [n] and `query_recent` [n, R] codes.
    Returns ([n] values, NaN where no recent item; the final `Neighbours`).
    """
    counts = _Counts(items)
    take_day, take_user, take_item, query_day, query_class = (
        np.asarray(a, dtype=np.int64) for a in (take_day, take_user, take_item, query_day, query_class))
    query_recent = np.asarray(query_recent, dtype=np.int64).reshape(query_day.size, -1)
    n_users = int(take_user.max()) + 1 if take_user.size else 0
    t_order = np.argsort(take_day, kind="stable")
    q_order = np.argsort(query_day, kind="stable")
    t_days, q_days = take_day[t_order], query_day[q_order]
    out = np.full(query_day.size, np.nan)
    for day in np.union1d(t_days, q_days).tolist():
        ks = q_order[np.searchsorted(q_days, day):np.searchsorted(q_days, day, side="right")]
        if ks.size:  # the state before this day's takes
            out[ks] = counts.query_values(query_class[ks], query_recent[ks])
        today = t_order[np.searchsorted(t_days, day):np.searchsorted(t_days, day, side="right")]
        counts.add_day(take_user[today], take_item[today], n_users)
    return out, counts.neighbours()


__all__ = ["COOCCURRENCE", "CooccurrenceError", "Neighbours", "mean_similarity", "pair_similarity",
           "point_in_time"]
