"""Gold Delta tables -> the joined example frame -> `Batch`es, point in time and streaming.

`read_examples` joins each `training_examples` row of event_date E to

* `user_features_daily` at (user_id, feature_date = E - 1)            left join (cold start),
* `class_features_daily` popularity at (class_id, feature_date = E - 1) left join (a class
  released on E has no row: its popularity is null, `ml.features` fills counts with 0 and rates
  with the training mean), columns prefixed ``class_``,
* the static class catalogue from bronze `classes` (latest landing per class_id): instructor_id,
  discipline, equipment, duration_min, difficulty, body_focus, music_genre, release_date. These
  never change after release, so reading them as of now leaks nothing, and a class released on
  the event day still has them.

A "mapped" dataset (`dataset="mapped"`, any interaction log imported through a mapping file) has
no bronze catalogue and no affinity table: the item's static columns (release_date, item_attr_*)
come from gold class_features_daily itself (static per item), its popularity (events_*, rates)
from the row at feature_date, prefixed ``class_`` as for fitness, and every column of
user_features_daily is joined (events_*, usual_hour, last_ctx_*, user_attr_*, ...).

Delta is read through `pl.scan_delta` only (STACK.md: never `DeltaTable.to_pyarrow_table()`).
`iter_batches` collects a few event dates at a time: the date filter reaches every scan (the
feature tables through the `feature_date` join key), so memory follows the chunk, not the table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from typing import Iterator, Sequence

import polars as pl
import torch
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from ml.batch import Batch
from ml.features import (
    CLASS_POPULARITY,
    CLASS_PREFIX,
    DATASETS,
    ITEM_ATTR_PREFIX,
    MAPPED_CLASS_POPULARITY,
    Encoders,
    FeatureSpec,
    mapped_spec,
)

GOLD_TABLES = ("training_examples", "user_features_daily", "class_features_daily")
AFFINITY_TABLE = "user_instructor_affinity"  # optional: (feature_date, user_id, instructor_id)

USER_FEATURE_COLUMNS = (
    "fitness_level", "birth_year", "gender", "country", "owns_bike", "owns_tread",
    "days_since_signup", "workouts_total", "workouts_7d", "workouts_28d", "minutes_7d",
    "minutes_28d", "completion_rate_28d", "days_since_last_workout", "last_discipline",
    "last_body_focus", "last_duration_min", "last_platform", "last_instructor_id",
    "top_instructor_id", "top_instructor_share", "top_discipline",
    "share_cycling", "share_running", "share_walking", "share_strength", "share_yoga",
    "share_stretching", "share_meditation", "share_cardio", "share_pilates",
    "usual_hour_bike", "usual_hour_tread", "usual_hour_app",
    "session_minutes_weekday", "session_minutes_weekend",
    "music_likes_total", "music_likes_28d", "bookmarks_total", "bookmarks_28d",
)
CLASS_STATIC_COLUMNS = (
    "instructor_id", "discipline", "equipment", "duration_min", "difficulty", "body_focus",
    "music_genre",
)


def table_uri(lakehouse_uri: str, layer: str, name: str) -> str:
    return f"{lakehouse_uri.rstrip('/')}/{layer}/{name}"


def _scan(uri: str, storage_options: dict | None) -> pl.LazyFrame:
    """Lazy scan of a Delta table; a missing table is a FileNotFoundError naming its URI."""
    try:
        DeltaTable(uri, storage_options=storage_options or None)
    except TableNotFoundError as e:
        raise FileNotFoundError(f"Delta table not found: {uri}") from e
    return pl.scan_delta(uri, storage_options=storage_options or None)


def _present(lf: pl.LazyFrame, wanted: Sequence[str]) -> list[str]:
    names = set(lf.collect_schema().names())
    return [c for c in wanted if c in names]


def _as_date(d) -> dt.date | None:
    if d is None or isinstance(d, dt.date) and not isinstance(d, dt.datetime):
        return d
    if isinstance(d, dt.datetime):
        return d.date()
    return dt.date.fromisoformat(str(d))


def user_kept(user_id: str, sample_fraction: float, seed: int = 0) -> bool:
    """Whether a user is in the sample: a stable hash of (seed, user_id), not Python's hash()."""
    if sample_fraction >= 1.0:
        return True
    h = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < sample_fraction


def _class_catalogue(lakehouse_uri: str, storage_options: dict | None) -> pl.DataFrame:
    """Static class metadata from bronze `classes`, the latest landing per class_id."""
    lf = _scan(table_uri(lakehouse_uri, "bronze", "classes"), storage_options)
    names = set(lf.collect_schema().names())
    order = [c for c in ("landing_date", "_ingested_at") if c in names]
    if order:
        lf = lf.sort(order, descending=True, nulls_last=True)
    release = (
        pl.col("release_ts").dt.convert_time_zone("UTC").dt.date()
        if "release_ts" in names else pl.col("release_date")
    )
    return (
        lf.unique(subset=["class_id"], keep="first", maintain_order=True)
        .select(
            pl.col("class_id").cast(pl.Utf8),
            pl.col("instructor_id").cast(pl.Utf8),
            pl.col("discipline").cast(pl.Utf8),
            pl.col("equipment").cast(pl.Utf8),
            pl.col("duration_min").cast(pl.Int32),
            pl.col("difficulty").cast(pl.Float64),
            pl.col("body_focus").cast(pl.Utf8),
            pl.col("music_genre").cast(pl.Utf8),
            release.alias("release_date"),
        )
        .collect()
    )


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def _popularity_columns(dataset: str) -> tuple[str, ...]:
    return MAPPED_CLASS_POPULARITY if dataset == "mapped" else CLASS_POPULARITY


def item_static(lakehouse_uri: str, storage_options: dict | None) -> pl.DataFrame:
    """Mapped data: class_id + the static item columns (release_date, item_attr_*) of gold
    class_features_daily, one row per item (its latest row: the values never change)."""
    lf = _scan(table_uri(lakehouse_uri, "gold", "class_features_daily"), storage_options)
    names = lf.collect_schema().names()
    static = [c for c in names if c == "release_date" or c.startswith(ITEM_ATTR_PREFIX)]
    return (
        lf.select("class_id", "feature_date", *static)
        .sort("feature_date", descending=True)
        .unique(subset=["class_id"], keep="first", maintain_order=True)
        .select(pl.col("class_id").cast(pl.Utf8), *static)
        .collect()
    )


def class_catalogue(lakehouse_uri: str, storage_options: dict | None,
                    dataset: str = "fitness") -> pl.DataFrame:
    """The static class columns: bronze `classes` (fitness) or gold class_features_daily (mapped)."""
    _check_dataset(dataset)
    if dataset == "mapped":
        return item_static(lakehouse_uri, storage_options)
    return _class_catalogue(lakehouse_uri, storage_options)


def class_popularity_at(lakehouse_uri: str, storage_options: dict | None,
                        feature_date: dt.date, dataset: str = "fitness") -> pl.DataFrame:
    """class_id + the `class_`-prefixed popularity columns of class_features_daily at a date."""
    _check_dataset(dataset)
    cf = _scan(table_uri(lakehouse_uri, "gold", "class_features_daily"), storage_options)
    present = set(cf.collect_schema().names())
    return cf.filter(pl.col("feature_date") == feature_date).select(
        "class_id", *[pl.col(c).alias(CLASS_PREFIX + c) for c in _popularity_columns(dataset)
                      if c in present]
    ).collect()


def gold_schemas(lakehouse_uri: str, storage_options: dict | None = None
                 ) -> tuple[dict, dict, dict]:
    """(user_features_daily, class_features_daily, training_examples) column -> dtype."""
    so = storage_options or None
    return tuple(dict(_scan(table_uri(lakehouse_uri, "gold", t), so).collect_schema().items())
                 for t in ("user_features_daily", "class_features_daily", "training_examples"))


def mapped_spec_from_gold(lakehouse_uri: str, storage_options: dict | None = None, *,
                          include_ids: bool = False) -> FeatureSpec:
    """`ml.features.mapped_spec` of the columns the mapped gold tables have."""
    users, classes, examples = gold_schemas(lakehouse_uri, storage_options)
    return mapped_spec(users, classes, examples, include_ids=include_ids)


def read_examples(
    lakehouse_uri: str,
    *,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    storage_options: dict | None = None,
    sample_fraction: float = 1.0,
    seed: int = 0,
    columns: Sequence[str] | None = None,
    dataset: str = "fitness",
) -> pl.LazyFrame:
    """Training examples of event_date in [start, end] with point-in-time features, lazily.

    dataset: "fitness" (bronze catalogue, affinity) or "mapped" (see the module docstring).

    Features come from feature_date = event_date - 1 (the `feature_date` column of
    training_examples). With sample_fraction < 1, whole users are kept or dropped by a stable
    hash of (seed, user_id): the same users for any date range and any process. A missing gold
    or bronze table raises FileNotFoundError naming its URI; an empty training_examples table
    raises ValueError.
    """
    if not 0.0 < sample_fraction <= 1.0:
        raise ValueError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
    _check_dataset(dataset)
    start, end = _as_date(start), _as_date(end)
    so = storage_options or None
    ex_uri = table_uri(lakehouse_uri, "gold", "training_examples")
    ex = _scan(ex_uri, so)
    users = _scan(table_uri(lakehouse_uri, "gold", "user_features_daily"), so)
    classes = _scan(table_uri(lakehouse_uri, "gold", "class_features_daily"), so)
    mapped = dataset == "mapped"
    catalogue = item_static(lakehouse_uri, so) if mapped else _class_catalogue(lakehouse_uri, so)

    if ex.head(1).collect().height == 0:
        raise ValueError(f"Delta table is empty: {ex_uri}")

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

    if mapped:  # every user column (the spec picks), but none the examples already have
        taken = set(ex.collect_schema().names())
        ucols = [c for c in users.collect_schema().names() if c not in taken]
    else:
        ucols = _present(users, USER_FEATURE_COLUMNS)
    users = users.filter(fdate_filter).select("user_id", "feature_date", *ucols)
    pop_names = _popularity_columns(dataset)
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
    if mapped:  # no affinity table for mapped data
        if missing_pop:
            out = out.with_columns(missing_pop)
        return out.select(list(columns)) if columns is not None else out
    affinity = _affinity(lakehouse_uri, so)
    if affinity is not None:
        aff = affinity.filter(fdate_filter).select(
            "user_id", "feature_date", "instructor_id",
            pl.col("share_56d").cast(pl.Float64).alias("user_instructor_share"),
            pl.col("workouts_56d").cast(pl.Float64).alias("user_instructor_workouts"))
        out = out.join(aff, on=["user_id", "feature_date", "instructor_id"], how="left")
    else:  # an older lakehouse without the table: the features exist, as "no affinity"
        out = out.with_columns(pl.lit(None, pl.Float64).alias("user_instructor_share"),
                               pl.lit(None, pl.Float64).alias("user_instructor_workouts"))
    if missing_pop:
        out = out.with_columns(missing_pop)
    if columns is not None:
        out = out.select(list(columns))
    return out


def _affinity(lakehouse_uri: str, storage_options: dict | None) -> pl.LazyFrame | None:
    try:
        return _scan(table_uri(lakehouse_uri, "gold", AFFINITY_TABLE), storage_options)
    except FileNotFoundError:
        return None


def _event_dates(lf: pl.LazyFrame) -> list[dt.date]:
    return sorted(lf.select(pl.col("event_date").unique()).collect()["event_date"].to_list())


def iter_batches(
    data: pl.LazyFrame | pl.DataFrame,
    encoders: Encoders,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    days_per_chunk: int = 1,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Yield `Batch`es of `batch_size` rows (the last may be smaller unless drop_last).

    A LazyFrame is collected `days_per_chunk` event dates at a time (filtered on event_date
    and, when present, on feature_date so the feature-table scans prune too); rows left over
    at the end of a chunk start the next batch. With shuffle_seed, chunks are visited in a
    seeded random order and rows are shuffled within each chunk. Every row comes out exactly
    once.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    lf = data.lazy() if isinstance(data, pl.DataFrame) else data
    names = set(lf.collect_schema().names())

    if "event_date" in names:
        dates = _event_dates(lf)
        chunks = [dates[i:i + days_per_chunk] for i in range(0, len(dates), days_per_chunk)]
    else:
        chunks = [None]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(chunks)

    buf: list[Batch] = []
    buffered = 0
    for k, chunk in enumerate(chunks):
        if chunk is None:
            frame = lf.collect()
        else:
            pred = pl.col("event_date").is_in(chunk)
            if "feature_date" in names:
                pred &= pl.col("feature_date").is_in([d - dt.timedelta(days=1) for d in chunk])
            frame = lf.filter(pred).collect()
        if frame.height == 0:
            continue
        if shuffle_seed is not None:
            frame = frame.sample(fraction=1.0, shuffle=True, seed=shuffle_seed * 1_000_003 + k)
        batch = encoders.transform(frame)
        buf.append(batch)
        buffered += len(batch)
        while buffered >= batch_size:
            whole = _cat(buf)
            yield Batch(whole.dense[:batch_size], whole.sparse[:batch_size], whole.labels[:batch_size])
            rest = Batch(whole.dense[batch_size:], whole.sparse[batch_size:], whole.labels[batch_size:])
            buf, buffered = ([rest] if len(rest) else []), len(rest)
    if buffered and not drop_last:
        yield _cat(buf)


def _cat(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    return Batch(
        torch.cat([b.dense for b in batches]),
        torch.cat([b.sparse for b in batches]),
        torch.cat([b.labels for b in batches]),
    )


def table_versions(
    lakehouse_uri: str,
    names: Sequence[str] = GOLD_TABLES,
    storage_options: dict | None = None,
    *,
    layer: str = "gold",
) -> dict[str, int]:
    """Current Delta version of each named table (lineage for MLflow); missing -> FileNotFoundError."""
    out: dict[str, int] = {}
    for name in names:
        uri = table_uri(lakehouse_uri, layer, name)
        try:
            out[name] = int(DeltaTable(uri, storage_options=storage_options or None).version())
        except TableNotFoundError as e:
            raise FileNotFoundError(f"Delta table not found: {uri}") from e
    return out


__all__ = [
    "GOLD_TABLES", "read_examples", "class_catalogue", "class_popularity_at", "item_static",
    "gold_schemas", "mapped_spec_from_gold", "iter_batches", "table_versions", "table_uri", "user_kept",
]
