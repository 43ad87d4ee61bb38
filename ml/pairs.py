"""Encode users and classes once, then score every (user, class) pair without a cross-join frame.

A ranking list puts one user (with the context the list assumes) against every candidate class
of a platform: thousands of pairs per user. Building that cross join as a polars frame and running
`Encoders.transform` on it costs far more than the model. Instead:

* the user side (user features + the list's context) is encoded once per user,
* the class side (catalogue + popularity + age) once per class,
* the few features of the pair itself (`ml.features.pair_feature`: the user's share of the
  class's discipline, same instructor / discipline, the affinity to its instructor or to its
  attributes' values, its similarity to the user's recent items) are computed from small
  per-side codes,

and a pair's row is assembled by gathering. The result equals `Encoders.transform` of the
explicit cross join exactly (a test holds them together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ml.cooccurrence import Neighbours, pair_similarity
from ml.features import (
    AFFINITY_COLUMN,
    DISCIPLINES,
    MULTI_VALUE_SEPARATOR,
    Encoders,
    FeatureError,
    class_side,
    pair_feature,
    prepare,
)

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl
# polars only where frames are encoded: gathering pairs (`PairEncoder.pairs`, `score_matrix`)
# and `ml.factorized` import without it

# (dense [N, n_dense] float32, sparse [N, n_sparse] int64) -> logits [N, n_heads]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Side:
    """One side, encoded: its rows of the spec's dense/sparse columns plus the raw codes the
    pair features need."""

    dense: torch.Tensor  # [n, n_dense] (other side's columns hold junk; never read)
    sparse: torch.Tensor  # [n, n_slots]
    raw: dict[str, np.ndarray]  # pair-feature inputs


def _null_like(name: str, sparse: bool) -> pl.Expr:
    import polars as pl

    return pl.lit(None, dtype=pl.Utf8 if sparse else pl.Float64).alias(name)


class PairEncoder:
    def __init__(self, encoders: Encoders) -> None:
        self.encoders = encoders
        spec = encoders.spec
        for name in spec.sparse:
            if pair_feature(name) is not None:
                raise FeatureError(f"pair feature {name!r} must be dense")
        # the spec's pair features: name -> (kind, user column or field, class column)
        self.pair_specs = {n: pair_feature(n) for n in spec.dense if pair_feature(n) is not None}
        self.pair_cols = [(j, n) for j, n in enumerate(spec.dense) if n in self.pair_specs]
        self.dense_class = torch.tensor([class_side(n) for n in spec.dense], dtype=torch.bool)
        # per column of `Batch.sparse`: a bag's slots go with its feature
        self.sparse_class = torch.tensor([class_side(n) for n, k in zip(spec.sparse, spec.slots())
                                          for _ in range(k)], dtype=torch.bool)
        self._codes: dict[str, int] = {}
        self.neighbours = encoders.neighbours or Neighbours.empty()

    # -- sides -----------------------------------------------------------------------------
    def _complete(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The frame after `prepare`, with every spec column the other side owns set to null."""
        spec = self.encoders.spec
        frame = prepare(frame)
        missing = [_null_like(n, True) for n in spec.sparse if n not in frame.columns]
        missing += [_null_like(n, False) for n in spec.dense if n not in frame.columns]
        return frame.with_columns(missing) if missing else frame

    def _code(self, values: pl.Series) -> np.ndarray:
        import polars as pl

        out = np.full(len(values), -1, dtype=np.int64)
        for i, v in enumerate(values.cast(pl.Utf8).to_list()):
            if v is not None:
                out[i] = self._codes.setdefault(v, len(self._codes))
        return out

    def encode_users(self, users: pl.DataFrame, *, pairs: bool = True) -> Side:
        """Users with the context of the list (platform, hour_of_day, day_of_week, ...);
        pairs=False: without what the pair features read (a user tower reads none)."""
        import polars as pl

        frame = self._complete(users)
        batch = self.encoders.transform(frame, table="users")
        raw: dict[str, np.ndarray] = {}
        for name, (kind, ucol, ccol) in (self.pair_specs.items() if pairs else ()):
            if kind == "share":
                cols = [f"{ucol}{d}" for d in DISCIPLINES]
                raw[name] = np.column_stack([
                    frame[c].cast(pl.Float64).fill_null(np.nan).to_numpy() if c in frame.columns
                    else np.full(frame.height, np.nan) for c in cols
                ])
            elif kind == "lookup":
                raw[name] = self._lookup_table(frame, ucol, ccol)
            elif kind == "cooc":  # [n, R] codes of the recent items (-1: none)
                cols = [frame[c].cast(pl.Utf8).to_list() for c in self.encoders.spec.recent_items
                        if c in frame.columns]
                raw[name] = (np.column_stack([self.neighbours.codes(c) for c in cols]) if cols
                             else np.full((frame.height, 0), -1, dtype=np.int64))
            elif ucol in frame.columns:
                raw[name] = self._code(frame[ucol])
            else:
                raw[name] = np.full(frame.height, -1, dtype=np.int64)
        return Side(batch.dense, batch.sparse, raw)

    def _lookup_table(self, frame: pl.DataFrame, field: str, column: str) -> np.ndarray:
        """[n_users, n_codes] values of `field` per (user, value of the class column `column`)
        from the users' AFFINITY_COLUMN (a list of structs: column, key and the fields); NaN =
        no row."""
        import polars as pl

        rows = pl.DataFrame(schema={"_i": pl.UInt32, "key": pl.Utf8, field: pl.Float64})
        if AFFINITY_COLUMN in frame.columns:
            rows = (frame.select(pl.col(AFFINITY_COLUMN)).with_row_index("_i")
                    .explode(AFFINITY_COLUMN).drop_nulls(AFFINITY_COLUMN).unnest(AFFINITY_COLUMN)
                    .filter((pl.col("column") == column) & pl.col("key").is_not_null())
                    .select("_i", pl.col("key").cast(pl.Utf8), pl.col(field).cast(pl.Float64)))
        for key in rows["key"].unique(maintain_order=True).to_list():  # codes in order of appearance
            self._codes.setdefault(key, len(self._codes))
        table = np.full((frame.height, max(len(self._codes), 1)), np.nan)
        if rows.height == 0:
            return table
        codes = rows["key"].replace_strict(self._codes, return_dtype=pl.Int64).to_numpy()
        table[rows["_i"].to_numpy(), codes] = rows[field].fill_null(np.nan).to_numpy()
        return table

    def encode_classes(self, classes: pl.DataFrame) -> Side:
        """Candidate classes: catalogue, `class_`-prefixed popularity, release_date, event_date."""
        import polars as pl

        frame = self._complete(classes)
        batch = self.encoders.transform(frame, table="classes")
        raw: dict[str, np.ndarray] = {}
        index = {d: i for i, d in enumerate(DISCIPLINES)}
        for name, (kind, _, ccol) in self.pair_specs.items():
            values = frame[ccol] if ccol in frame.columns else pl.Series([None] * frame.height)
            if kind == "lookup":
                raw[name] = self._value_codes(values)
            elif kind == "cooc":  # [C, items + 1] the class's similarity to every item
                raw[name] = self.neighbours.similarity_rows(values.cast(pl.Utf8).to_list())
            elif kind == "share":
                raw[name] = np.array(
                    [index.get(v, -1) if v is not None else -1
                     for v in values.cast(pl.Utf8).to_list()], dtype=np.int64)
            else:
                codes = self._code(values)
                codes[codes < 0] = -2  # null never equals a null user value
                raw[name] = codes
        return Side(batch.dense, batch.sparse, raw)

    def _value_codes(self, values: pl.Series) -> np.ndarray:
        """[n_classes, T] codes of each class's values (a multi-valued column holds several,
        joined by MULTI_VALUE_SEPARATOR), -2 where it has no more."""
        import polars as pl

        lists = values.cast(pl.Utf8).str.split(MULTI_VALUE_SEPARATOR).to_list()
        out = np.full((len(lists), max([len(v) for v in lists if v] + [1])), -2, dtype=np.int64)
        for i, vs in enumerate(lists):
            for j, v in enumerate(vs or ()):
                out[i, j] = self._codes.setdefault(v, len(self._codes))
        return out

    # -- pairs -----------------------------------------------------------------------------
    def pair_dense(self, name: str, u: Side, ui: np.ndarray, c: Side,
                   cidx: np.ndarray | None = None) -> np.ndarray:
        """[n_users, n_classes] normalized values of one pair feature; with `cidx` [n_users, m]
        (class rows), [n_users, m] of each user's own classes (retrieve then rank computes
        the pairs it ranks, not every class)."""
        spec, enc = self.encoders.spec, self.encoders
        kind = self.pair_specs[name][0]
        n = len(ui)
        rows = np.arange(n)[:, None]
        # the classes' values, [1, C, ...] (every class) or [n, m, ...] (each user's own);
        # a co-occurrence row is a whole similarity row: indexed inside `pair_similarity`
        cv = None if kind == "cooc" else c.raw[name][None] if cidx is None else c.raw[name][cidx]
        if kind == "share":
            shares = u.raw[name][ui]  # [n, 9]
            raw = np.where(cv >= 0, shares[rows, np.clip(cv, 0, None)], np.nan)
        elif kind == "lookup":
            table = u.raw[name][ui]  # [n, codes known when the users were encoded]
            # cv [., m, T], -2 = no (more) value
            has = cv != -2
            known = (cv >= 0) & (cv < table.shape[1])
            # [n, m, T]: a value without a row counts 0; the mean over the class's values
            vals = np.where(known, table[rows[:, :, None], np.where(known, cv, 0)], 0.0)
            vals = np.where(has & ~np.isnan(vals), vals, 0.0)
            n_values = has.sum(axis=2)
            raw = np.where(n_values > 0, vals.sum(axis=2) / np.maximum(n_values, 1), np.nan)
        elif kind == "cooc":
            raw = pair_similarity(c.raw[name], u.raw[name][ui], cidx)
        else:
            raw = (u.raw[name][ui][:, None] == cv).astype(np.float64)
        if name in spec.fill_null:
            raw = np.where(np.isnan(raw), spec.fill_null[name], raw)
        if name in spec.log1p:
            raw = np.log1p(np.clip(raw, 0.0, None))
        out = (raw - enc.mean[name]) / enc.std[name]
        out[np.isnan(out)] = 0.0
        return out

    def pairs(self, u: Side, ui: np.ndarray, c: Side) -> tuple[torch.Tensor, torch.Tensor]:
        """(dense, sparse) rows for users u[ui] x every class of c, user-major."""
        n, C = len(ui), c.dense.shape[0]
        ud, us = u.dense[ui], u.sparse[ui]
        dense = torch.where(self.dense_class, c.dense.unsqueeze(0), ud.unsqueeze(1))  # [n, C, D]
        sparse = torch.where(self.sparse_class, c.sparse.unsqueeze(0), us.unsqueeze(1))
        for j, name in self.pair_cols:
            dense[:, :, j] = torch.from_numpy(self.pair_dense(name, u, ui, c).astype(np.float32))
        return dense.reshape(n * C, -1), sparse.reshape(n * C, -1)


@torch.no_grad()
def score_matrix(
    score_fn: ScoreFn,
    encoder: PairEncoder,
    users: Side,
    classes: Side,
    *,
    head: int = 0,
    max_rows: int = 262_144,
) -> np.ndarray:
    """[n_users, n_classes] logits of one head, users chunked so a chunk has <= max_rows pairs."""
    n_users, n_classes = users.dense.shape[0], classes.dense.shape[0]
    out = np.empty((n_users, n_classes), dtype=np.float32)
    step = max(1, max_rows // max(n_classes, 1))
    for start in range(0, n_users, step):
        ui = np.arange(start, min(start + step, n_users))
        dense, sparse = encoder.pairs(users, ui, classes)
        logits = score_fn(dense, sparse)[:, head]
        out[ui] = logits.float().reshape(len(ui), n_classes).cpu().numpy()
    return out


__all__ = ["PairEncoder", "Side", "score_matrix", "ScoreFn"]
