"""Scoring a batch of users into home-screen rows (one `BatchScorer` per Ray actor, or in-process).

Scoring is factorized by side (`ml.factorized`), of every candidate of the platform
(exhaustive) or of each user's retrieved ones (`ml.retrieval.Retriever`: retrieve then rank); a
DCN model falls back to scoring explicit pairs. Each row is the model under that row's context (`ml.context`); top-K per
row by P(take), at most `max_per_instructor` classes of one instructor (or `cap_column` value)
per row, and no class twice on one screen (`distinct_rows`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import polars as pl
import torch

from ml.context import after_last_workout, usual_hour
from ml.factorized import FactorizedDLRM, factorized_score_matrix
from ml.features import Encoders
from ml.pairs import PairEncoder, score_matrix
from ml.precision import resolve_precision
from ml.rows import RECOMMENDATION_SCHEMA, DayInputs, InferenceError, InferenceSettings, RowSpec

if TYPE_CHECKING:  # pragma: no cover
    from ml.retrieval import Retriever

_ACTIVITY = {"cycling": "ride", "running": "run", "walking": "walk", "strength": "strength class",
             "yoga": "yoga", "stretching": "stretch", "meditation": "meditation",
             "cardio": "cardio class", "pilates": "pilates class"}



def top_k_capped(scores: np.ndarray, groups: np.ndarray | None, k: int, cap: int) -> np.ndarray:
    """[n, k] column indices of the best scores per row, at most `cap` per group (instructor),
    -1 where fewer remain; -inf scores are never chosen. `groups`: [C] int codes >= 0 shared by
    every row, [n, C] each row's own (its columns are its own classes), or None for no cap."""
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
    g = groups[idx] if groups.ndim == 1 else np.take_along_axis(groups, idx, axis=1)
    # seen[i, j]: how many of row i's first j + 1 picks share pick j's group: sort each row by
    # (group, position), count from each group's first place, put back (no [n, pool, groups])
    by_group = np.argsort(g * pool + np.arange(pool), axis=1)
    sg = np.take_along_axis(g, by_group, axis=1)
    at = np.arange(pool)[None, :]
    first = np.maximum.accumulate(np.where(np.diff(sg, axis=1, prepend=-1) != 0, at, 0), axis=1)
    seen = np.empty_like(g)
    np.put_along_axis(seen, by_group, at - first + 1, axis=1)
    keep = (seen <= cap) & np.isfinite(np.take_along_axis(scores, idx, axis=1))
    slot = np.cumsum(keep, axis=1)
    out = np.full((n, k), -1, dtype=np.int64)
    rows, cols = np.nonzero(keep & (slot <= k))
    out[rows, slot[rows, cols] - 1] = idx[rows, cols]
    return out


def row_context(settings: InferenceSettings, day: DayInputs, users: pl.DataFrame, platform: str,
                row: RowSpec) -> pl.DataFrame:
    """The users' rows under a home-screen row's context (what the model and the user tower read)."""
    if row.hour is not None:
        hour: int | pl.Series = row.hour
    else:
        hour = usual_hour(users, platform).fill_null(day.default_hour[platform])
    ctx = settings.dataset.list_context(users, platform, day.serve_date, hour)
    return after_last_workout(ctx) if row.after_last_workout else ctx


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
                 day: DayInputs, settings: InferenceSettings, model_version: int,
                 retriever: "Retriever | None" = None) -> None:
        self.settings, self.day, self.version = settings, day, int(model_version)
        self.retriever = retriever  # None: every candidate of the platform (exhaustive)
        if retriever is not None and settings.retrieve_similar:
            retriever.use_similar(encoders.neighbours, encoders.spec.recent_items, settings.retrieve_similar)
        if not settings.dataset.matches(encoders.spec):
            raise InferenceError(f"the model was trained on {encoders.spec.dataset!r} data; "
                                 f"the inference settings are for {settings.dataset.name!r} data")
        self.module = module
        self.pairs = PairEncoder(encoders)
        self.precision = resolve_precision(settings.precision)  # "auto": the faster one here
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
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
            elif settings.cap_column is not None and settings.dataset.strict_cap_column:
                raise InferenceError(f"cap_column {settings.cap_column!r} is not an item column "
                                     f"(have: {frame.columns})")
            self.platforms[p] = _Platform(frame, side, ids, groups, {c: j for j, c in enumerate(ids)},
                                          self.fast.class_side(side) if self.fast else None)
        self.pairs_scored = 0

    def _logits(self, users: pl.DataFrame, platform: str,
                plat: _Platform) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, cols): exhaustive, [n, C] logits of every candidate and cols None;
        retrieve-then-rank, [n, m] logits of each user's retrieved candidates and cols [n, m]
        their class rows (a repeated class scores -inf after its first place, so the top-k
        never shows it twice; a DCN model scores them all and keeps the retrieved)."""
        side = self.pairs.encode_users(users)
        if self.retriever is None:
            self.pairs_scored += users.height * len(plat.class_ids)
            if self.fast is not None:
                return factorized_score_matrix(self.fast, self.pairs, side, plat.side, class_side=plat.cs), None
            return score_matrix(lambda d, s: self.module(d, s), self.pairs, side, plat.side, head=0), None
        idx = self.retriever.candidates(users, platform)
        if self.fast is not None:
            self.pairs_scored += idx.size
            out = factorized_score_matrix(self.fast, self.pairs, side, plat.side, class_side=plat.cs, idx=idx)
        else:
            full = score_matrix(lambda d, s: self.module(d, s), self.pairs, side, plat.side, head=0)
            self.pairs_scored += full.size
            out = np.take_along_axis(full, idx, axis=1)
        order = np.argsort(idx, axis=1, kind="stable")
        repeat = np.diff(np.take_along_axis(idx, order, axis=1), axis=1) == 0
        rows, at = np.nonzero(repeat)
        out[rows, order[rows, at + 1]] = -np.inf
        return out, idx

    def _context(self, users: pl.DataFrame, platform: str, row: RowSpec) -> pl.DataFrame:
        return row_context(self.settings, self.day, users, platform, row)

    def score(self, users: pl.DataFrame, taken: pl.DataFrame) -> pl.DataFrame:
        """Rows (RECOMMENDATION_SCHEMA) for this batch of users (with their affinity column)."""
        s = self.settings
        now = dt.datetime.now(dt.timezone.utc)
        out: list[pl.DataFrame] = []
        for p, plat in self.platforms.items():
            up = users.filter(s.dataset.uses_platform(users, p))
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
                logits, cols = self._logits(self._context(ur, p, row), p, plat)
                at = np.array([pos[u] for u in ur["user_id"].to_list()], dtype=np.int64)
                groups = plat.groups
                if cols is None:
                    logits[blocked[at]] = -np.inf
                else:  # the retrieved columns only: nothing as wide as the catalogue per list
                    logits[np.take_along_axis(blocked[at], cols, axis=1)] = -np.inf
                    groups = None if groups is None else groups[cols]
                top = top_k_capped(logits, groups, s.top_k, s.max_per_instructor)
                ui, rank0 = np.nonzero(top >= 0)
                kj = top[ui, rank0]  # a column of `logits`
                cj = kj if cols is None else cols[ui, kj]  # a class row
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
                    "score": (1.0 / (1.0 + np.exp(-logits[ui, kj].astype(np.float64)))).astype(np.float32),
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


__all__ = ["BatchScorer", "row_context", "top_k_capped"]
