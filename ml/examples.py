"""Gold Delta tables -> the joined example frame -> `Batch`es, point in time and streaming.

`read_examples(gold, ...)` joins each `training_examples` row of event_date E to

* `user_features_daily` at (user_id, feature_date = E - 1)            left join (cold start),
* `class_features_daily` popularity at (class_id, feature_date = E - 1) left join (a class
  released on E has no row: its popularity is null, `ml.features` fills counts with 0 and rates
  with the training mean), columns prefixed ``class_``,
* the static class catalogue (`GoldStore.catalogue`: bronze `classes`, latest landing per
  class_id): instructor_id, discipline, equipment, duration_min, difficulty, body_focus,
  music_genre, release_date. These never change after release, so reading them as of now leaks
  nothing, and a class released on the event day still has them,
* the user's affinity to the class's instructor (gold user_instructor_affinity) at E - 1.

Which catalogue, user columns, popularity columns and affinity a dataset has is its `Dataset`
(`ml.datasets`). A "mapped" dataset (`dataset=MAPPED`, any interaction log imported through a
mapping file) has no bronze catalogue and no affinity table: the item's static columns come
from gold class_features_daily itself, its popularity (events_*, rates) from the row at
feature_date, prefixed ``class_`` as for fitness, and every column of user_features_daily is
joined (events_*, usual_hour, last_ctx_*, user_attr_*, ...).

`iter_batches` collects a few event dates at a time: the date filter reaches every scan (the
feature tables through the `feature_date` join key), so memory follows the chunk, not the table.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Iterator, Sequence

import numpy as np
import polars as pl
import torch

from ml.batch import Batch
from ml.cooccurrence import COOCCURRENCE, Neighbours, point_in_time
from ml.datasets import FITNESS, Dataset
from ml.features import CLASS_PREFIX, Encoders
from ml.gold import GoldStore, user_kept
from ml.prefetch import prefetch as _prefetch


def _present(lf: pl.LazyFrame, wanted: Sequence[str]) -> list[str]:
    names = set(lf.collect_schema().names())
    return [c for c in wanted if c in names]


def _as_date(d) -> dt.date | None:
    if d is None or isinstance(d, dt.date) and not isinstance(d, dt.datetime):
        return d
    if isinstance(d, dt.datetime):
        return d.date()
    return dt.date.fromisoformat(str(d))


def read_examples(
    gold: GoldStore,
    *,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    sample_fraction: float = 1.0,
    seed: int = 0,
    columns: Sequence[str] | None = None,
    dataset: Dataset = FITNESS,
) -> pl.LazyFrame:
    """Training examples of event_date in [start, end] with point-in-time features, lazily.

    dataset: whose catalogue, columns and affinity (see the module docstring).

    Features come from feature_date = event_date - 1 (the `feature_date` column of
    training_examples). With sample_fraction < 1, whole users are kept or dropped by a stable
    hash of (seed, user_id): the same users for any date range and any process. A missing gold
    or bronze table raises FileNotFoundError naming its URI; an empty training_examples table
    raises ValueError.
    """
    if not 0.0 < sample_fraction <= 1.0:
        raise ValueError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
    start, end = _as_date(start), _as_date(end)
    ex = gold.scan("training_examples")
    users = gold.scan("user_features_daily")
    classes = gold.scan("class_features_daily")
    catalogue = dataset.catalogue(gold)

    if ex.head(1).collect().height == 0:
        raise ValueError(f"Delta table is empty: {gold.table_uri('training_examples')}")

    date_filter = pl.lit(True)
    fdate_filter = pl.lit(True)
    if start is not None:
        date_filter &= pl.col("event_date") >= start
        fdate_filter &= pl.col("feature_date") >= start - dt.timedelta(days=1)
    if end is not None:
        date_filter &= pl.col("event_date") <= end
        fdate_filter &= pl.col("feature_date") <= end - dt.timedelta(days=1)
    ex = ex.filter(date_filter)

    if sample_fraction < 1.0:
        ids = ex.select(pl.col("user_id").cast(pl.Utf8).unique()).collect()["user_id"].to_list()
        kept = [u for u in ids if user_kept(u, sample_fraction, seed)]
        ex = ex.filter(pl.col("user_id").cast(pl.Utf8).is_in(kept))

    ucols = dataset.example_user_columns(users, set(ex.collect_schema().names()))
    users = users.filter(fdate_filter).select("user_id", "feature_date", *ucols)
    pop_names = dataset.popularity_columns
    ccols = _present(classes, pop_names)
    classes = classes.filter(fdate_filter).select(
        "class_id", "feature_date", *[pl.col(c).alias(CLASS_PREFIX + c) for c in ccols]
    )
    # popularity columns absent from an older table still exist (null) for the encoders
    missing_pop = [pl.lit(None, dtype=pl.Float64).alias(CLASS_PREFIX + c)
                   for c in pop_names if c not in ccols]

    out = (
        ex.join(users, on=["user_id", "feature_date"], how="left")
        .join(classes, on=["class_id", "feature_date"], how="left")
        .join(catalogue.lazy(), on="class_id", how="left")
    )
    out = dataset.join_example_affinity(out, gold, fdate_filter)
    if missing_pop:
        out = out.with_columns(missing_pop)
    if columns is not None:
        out = out.select(list(columns))
    return out


# (gold uri, table versions, start, end) -> (the feature per query, the neighbours): the
# training job reads the same window for the encoders and every epoch
_COOCCURRENCE_CACHE: dict[tuple, tuple[pl.DataFrame, Neighbours]] = {}


def with_cooccurrence(examples: pl.LazyFrame, gold: GoldStore, start: dt.date, end: dt.date,
                      recent_items: Sequence[str]) -> tuple[pl.LazyFrame, Neighbours]:
    """Training examples of [start, end] (`read_examples`) with COOCCURRENCE point in time: each
    day's from the takes of the days before it (`ml.cooccurrence.point_in_time`) and the user
    columns `recent_items` (`FeatureSpec.recent_items`); and the neighbours after the takes of
    the last day, which the model carries."""
    recent = [c for c in recent_items if c in examples.collect_schema().names()]
    keys = ["event_date", "class_id", *recent]
    versions = gold.versions(("training_examples", "user_features_daily"))
    key = (gold.uri, tuple(sorted(versions.items())), start, end, tuple(recent))
    if key not in _COOCCURRENCE_CACHE:
        queries = examples.select(keys).unique().sort(keys, nulls_last=True).collect()
        takes = (gold.scan("training_examples")
                 .filter((pl.col("label_take") == 1) & (pl.col("event_date") <= end))
                 .select("event_date", pl.col("user_id").cast(pl.Utf8), pl.col("class_id").cast(pl.Utf8))
                 .unique().sort("event_date", "user_id", "class_id").collect())
        items_named = [takes["class_id"], *(queries[c].cast(pl.Utf8) for c in ["class_id", *recent])]
        items = pl.concat(items_named).drop_nulls().unique().sort()

        def codes(column: pl.Series) -> np.ndarray:  # a position in `items`, -1 for null
            return (column.cast(pl.Utf8).replace_strict(items, pl.int_range(len(items), eager=True),
                                                        default=None, return_dtype=pl.Int64)
                    .fill_null(-1).to_numpy())

        values, neighbours = point_in_time(
            items.to_list(),
            takes["event_date"].cast(pl.Int32).to_numpy(),
            takes["user_id"].rank("dense").cast(pl.Int64).to_numpy() - 1,
            codes(takes["class_id"]),
            queries["event_date"].cast(pl.Int32).to_numpy(),
            codes(queries["class_id"]),
            np.column_stack([codes(queries[c]) for c in recent]) if recent
            else np.zeros((queries.height, 0), dtype=np.int64))
        frame = queries.with_columns(pl.Series(COOCCURRENCE, values, dtype=pl.Float64, nan_to_null=True))
        _COOCCURRENCE_CACHE.clear()  # one window at a time
        _COOCCURRENCE_CACHE[key] = (frame, neighbours)
    frame, neighbours = _COOCCURRENCE_CACHE[key]
    return examples.join(frame.lazy(), on=keys, how="left", nulls_equal=True), neighbours


_NO_CSE = pl.QueryOptFlags(comm_subplan_elim=False)


def collect_days(lf: pl.LazyFrame, days: Sequence[dt.date], names: set[str] | None = None) -> pl.DataFrame:
    """The rows of event dates `days`, read and joined (filtered on event_date and, when the frame
    has it, on feature_date, so the feature tables' scans prune too). `names`: the frame's columns,
    when the caller has them."""
    names = set(lf.collect_schema().names()) if names is None else names
    pred = pl.col("event_date").is_in(days)
    if "feature_date" in names:
        pred &= pl.col("feature_date").is_in([d - dt.timedelta(days=1) for d in days])
    # without common-subplan caching: a subplan used twice (the mapped affinity joins the
    # examples with themselves) would be cached before this filter reaches it, and every chunk
    # would read the whole range (8x slower on MovieLens). The in-memory engine: a chunk is one
    # day, materialized whole anyway, and its five-table join takes 0.68x the streaming engine's
    # time (polars 2.1, demo data)
    return lf.filter(pred).collect(optimizations=_NO_CSE, engine="in-memory")


def _event_dates(lf: pl.LazyFrame) -> list[dt.date]:
    return sorted(lf.select(pl.col("event_date").unique()).collect()["event_date"].to_list())


class ChunkCache:
    """Encoded chunks kept across epochs, up to `max_bytes`: a chunk is read, joined and encoded
    once, and later epochs only put its rows in their order (the same batches as without the
    cache). One cache per (data, encoders): the caller keeps it for one training run. Chunks
    beyond the budget, and chunks without a distinct `example_id`, are read every time."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._chunks: dict[tuple, tuple[Batch, pl.DataFrame]] = {}

    def get(self, key: tuple) -> tuple[Batch, pl.DataFrame] | None:
        return self._chunks.get(key)

    def put(self, key: tuple, batch: Batch, frame: pl.DataFrame) -> None:
        ids = frame.select("example_id") if "example_id" in frame.columns else None
        if ids is None or ids["example_id"].null_count() or ids["example_id"].n_unique() != len(ids):
            return  # the row order needs every column: not worth keeping
        size = sum(t.numel() * t.element_size() for t in (batch.dense, batch.sparse, batch.labels))
        size += ids.estimated_size()
        if self.bytes + size <= self.max_bytes:
            self._chunks[key] = (batch, ids)
            self.bytes += size


def iter_batches(
    data: pl.LazyFrame | pl.DataFrame,
    encoders: Encoders,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    days_per_chunk: int = 1,
    drop_last: bool = False,
    dates: Sequence[dt.date] | None = None,
    prefetch: int = 0,
    cache: ChunkCache | None = None,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Yield `Batch`es of `batch_size` rows (the last may be smaller unless drop_last).

    A LazyFrame is collected `days_per_chunk` event dates at a time (filtered on event_date
    and, when present, on feature_date so the feature-table scans prune too); rows left over
    at the end of a chunk start the next batch. `dates`: the event dates to visit, when the
    caller knows them (a date without rows is skipped); default: those in the data (one more
    query over the joined frame). With shuffle_seed, chunks are visited in a seeded random
    order and rows are shuffled within each chunk. Every row comes out exactly once.
    prefetch: batches prepared ahead on a background thread (`ml.prefetch`: the same batches in
    the same order); 0: each batch is prepared when asked for.
    cache: encoded chunks kept from an earlier pass over the same data (`ChunkCache`).
    pin_memory: each batch in page-locked memory (needs CUDA), by the producer (the background
    thread when prefetching), so that a copy to the GPU with non_blocking=True overlaps the step.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    batches = _batches(data, encoders, batch_size, shuffle_seed, days_per_chunk, drop_last, dates, cache)
    if pin_memory:
        batches = (Batch(*(t.pin_memory() for t in (b.dense, b.sparse, b.labels))) for b in batches)
    return _prefetch(batches, prefetch, name="batches") if prefetch else batches


def _batches(data: pl.LazyFrame | pl.DataFrame, encoders: Encoders, batch_size: int,
             shuffle_seed: int | None, days_per_chunk: int, drop_last: bool,
             dates: Sequence[dt.date] | None, cache: ChunkCache | None = None) -> Iterator[Batch]:
    lf = data.lazy() if isinstance(data, pl.DataFrame) else data
    names = set(lf.collect_schema().names())

    if "event_date" in names:
        dates = sorted(set(dates)) if dates is not None else _event_dates(lf)
        chunks = [dates[i:i + days_per_chunk] for i in range(0, len(dates), days_per_chunk)]
    else:
        chunks = [None]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(chunks)

    buf: list[Batch] = []
    buffered = 0
    for k, chunk in enumerate(chunks):
        key = (None,) if chunk is None else tuple(chunk)
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            encoded, frame = hit  # frame: the rows' example_id, all the order needs
        else:
            frame = lf.collect() if chunk is None else collect_days(lf, chunk, names)
            if frame.height == 0:
                continue
            encoded = encoders.transform(frame)
            if cache is not None:
                cache.put(key, encoded, frame)
        order = _row_order(frame, None if shuffle_seed is None else shuffle_seed * 1_000_003 + k)
        # the chunk reordered in one gather, its batches slices of it (views: no copy); only a
        # batch that spans two chunks is copied (`_cat`). One gather per chunk, not per batch:
        # in an epoch the step evicts the encoded chunk from the caches between two batches
        ordered = _take(encoded, order)
        taken = 0
        while taken < len(order):
            piece = _slice(ordered, taken, taken + batch_size - buffered)
            taken += len(piece)
            buf.append(piece)
            buffered += len(piece)
            if buffered == batch_size:
                yield _cat(buf)
                buf, buffered = [], 0
    if buffered and not drop_last:
        yield _cat(buf)


def _row_order(frame: pl.DataFrame, seed: int | None) -> np.ndarray:
    """The order to emit a chunk's rows in. A multi-threaded scan and join return rows in any
    order, so this one depends only on the rows (the same seed gives the same batches, and the
    same model, on every run): by example_id (the gold key), or with a seed by a seeded hash of
    it, which sorts and shuffles in one cheap argsort of integers. Without a distinct key: sorted
    by every column (ties are equal rows), then a seeded permutation."""
    if "example_id" in frame.columns and frame["example_id"].null_count() == 0:
        key = frame["example_id"] if seed is None else frame["example_id"].hash(seed)
        order = key.arg_sort().to_numpy()
        ordered = key.gather(order)
        if not (ordered.head(-1) == ordered.tail(-1)).any():  # distinct: a total order
            return order
    order = frame.with_row_index("__row").sort(_order_columns(frame))["__row"].to_numpy()
    if seed is not None:
        order = order[np.random.default_rng(seed).permutation(len(order))]
    return order


def _order_columns(frame: pl.DataFrame) -> list[str]:
    """The example's keys first, then every other sortable column (ties left are equal rows)."""
    keys = [c for c in ("event_date", "user_id", "class_id") if c in frame.columns]
    rest = [c for c, t in frame.schema.items() if c not in keys and not t.is_nested()]
    return keys + rest


def _take(batch: Batch, order: np.ndarray) -> Batch:
    """The batch's rows at `order`, each tensor one contiguous copy (numpy: no torch threads on
    the producer's side when the batches are prefetched)."""
    return Batch(*(torch.from_numpy(np.take(t.numpy(), order, axis=0))
                   for t in (batch.dense, batch.sparse, batch.labels)))


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(batch.dense[start:stop], batch.sparse[start:stop], batch.labels[start:stop])


def _cat(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    return Batch(
        torch.cat([b.dense for b in batches]),
        torch.cat([b.sparse for b in batches]),
        torch.cat([b.labels for b in batches]),
    )




__all__ = ["ChunkCache", "collect_days", "iter_batches", "read_examples", "with_cooccurrence"]
