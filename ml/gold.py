"""The lakehouse's tables as the model code reads them: one `GoldStore` (a URI and its storage
options) instead of a URI and a dict passed side by side.

    gold = GoldStore("s3://bucket/lakehouse", {"AWS_REGION": "eu-west-1", ...})
    gold.scan("training_examples")          # lazy Delta scan; missing: FileNotFoundError naming it
    gold.scan("classes", layer="bronze")
    gold.affinity()                         # user_instructor_affinity, or None (mapped data)
    gold.versions()                         # Delta version per table (MLflow lineage)
    gold.class_catalogue()                  # static class columns (bronze classes)
    gold.class_display()                    # what the app shows: title, instructor name, ...

Delta is read through `pl.scan_delta` only (docs/stack.md: never `DeltaTable.to_pyarrow_table()`).
The point-in-time example join is `ml.examples.read_examples(gold, ...)`.

A "mapped" dataset (any interaction log imported through a mapping file) has no bronze catalogue
and no affinity table: the item's static columns (release_date, item_attr_*) come from gold
class_features_daily itself (`item_catalogue`). Which of them a dataset reads is `ml.datasets`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Sequence

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from ml.features import CLASS_PREFIX, ITEM_ATTR_PREFIX, FeatureSpec, mapped_spec

GOLD_TABLES = ("training_examples", "user_features_daily", "class_features_daily")
AFFINITY_TABLE = "user_instructor_affinity"  # optional: (feature_date, user_id, instructor_id)
# optional, mapped data: (feature_date, user_id, attribute, value) -> takes, share
ATTRIBUTE_AFFINITY_TABLE = "user_attribute_affinity"
# read when present, recorded in the lineage of a training run
OPTIONAL_TABLES = ("scoring_candidates", AFFINITY_TABLE, ATTRIBUTE_AFFINITY_TABLE)


def day_span(days) -> str:
    """Dates as people read them: a run of consecutive days as "first..last (N days)"."""
    days = sorted(days)
    if len(days) > 2 and (days[-1] - days[0]).days == len(days) - 1:
        return f"{days[0].isoformat()}..{days[-1].isoformat()} ({len(days)} days)"
    return ", ".join(d.isoformat() for d in days)


def user_kept(user_id: str, sample_fraction: float, seed: int = 0) -> bool:
    """Whether a user is in the sample: a stable hash of (seed, user_id), not Python's hash()."""
    if sample_fraction >= 1.0:
        return True
    h = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < sample_fraction


def days_for_rank(days: list[dt.date], rank: int, world_size: int, seed: int) -> list[dt.date]:
    """This worker's share of the training days: a seeded shuffle dealt round-robin, so each
    worker sees a spread of weekdays and the shares differ by at most one day."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    order = list(days)
    random.Random(seed).shuffle(order)
    return sorted(order[rank::world_size])


@dataclass(frozen=True)
class GoldStore:
    """Where the lakehouse is and how to reach it. The storage options (S3 keys) stay out of its
    repr, so a job or a log line that shows the store shows no credentials."""

    uri: str
    storage_options: dict[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # a local path is made absolute here: Ray workers (and Dagster's subprocesses) run in
        # other working directories, where "data/lakehouse" names nothing
        if "://" not in self.uri:
            object.__setattr__(self, "uri", os.path.abspath(self.uri))

    # -- tables ---------------------------------------------------------------------------------

    def table_uri(self, name: str, layer: str = "gold") -> str:
        return f"{self.uri.rstrip('/')}/{layer}/{name}"

    def scan(self, name: str, layer: str = "gold") -> pl.LazyFrame:
        """Lazy scan of a Delta table; a missing table is a FileNotFoundError naming its URI."""
        uri = self.table_uri(name, layer)
        try:
            DeltaTable(uri, storage_options=self.storage_options or None)
        except TableNotFoundError as e:
            raise FileNotFoundError(f"Delta table not found: {uri}") from e
        return pl.scan_delta(uri, storage_options=self.storage_options or None)

    def affinity(self, table: str = AFFINITY_TABLE) -> pl.LazyFrame | None:
        """gold user_instructor_affinity (or another affinity `table`), or None where there is
        none (older data, or the other dataset's)."""
        try:
            return self.scan(table)
        except FileNotFoundError:
            return None

    def versions(self, names: Sequence[str] = GOLD_TABLES, layer: str = "gold") -> dict[str, int]:
        """Current Delta version of each named table; missing -> FileNotFoundError."""
        out: dict[str, int] = {}
        for name in names:
            uri = self.table_uri(name, layer)
            try:
                out[name] = int(DeltaTable(uri, storage_options=self.storage_options or None).version())
            except TableNotFoundError as e:
                raise FileNotFoundError(f"Delta table not found: {uri}") from e
        return out

    def lineage(self) -> dict[str, int]:
        """Versions of the gold tables a model reads: GOLD_TABLES (required) and those of
        OPTIONAL_TABLES that exist."""
        versions = self.versions(GOLD_TABLES)
        for optional in OPTIONAL_TABLES:
            try:
                versions.update(self.versions([optional]))
            except FileNotFoundError:
                pass
        return versions

    def schemas(self) -> tuple[dict, dict, dict]:
        """(user_features_daily, class_features_daily, training_examples) column -> dtype."""
        return tuple(dict(self.scan(t).collect_schema().items())
                     for t in ("user_features_daily", "class_features_daily", "training_examples"))

    def mapped_spec(self, *, include_ids: bool = False) -> FeatureSpec:
        """`ml.features.mapped_spec` of the columns the mapped gold tables have."""
        users, classes, examples = self.schemas()
        return mapped_spec(users, classes, examples, include_ids=include_ids,
                           affinity=self.affinity(ATTRIBUTE_AFFINITY_TABLE) is not None)

    # -- what the model code asks of them ---------------------------------------------------------

    def event_dates(self) -> list[dt.date]:
        """The event dates present in gold training_examples (empty table: a clear error)."""
        lf = self.scan("training_examples")
        dates = lf.select(pl.col("event_date").unique()).collect()["event_date"].to_list()
        if not dates:
            raise ValueError(f"no training examples: Delta table {self.table_uri('training_examples')} "
                             "is empty")
        return sorted(dates)

    def lists_per_day(self, start: dt.date, end: dt.date) -> dict[dt.date, int]:
        """Event day -> the (user, platform) pairs with a take that day: the held-out lists a
        day gives (`ml.lists`)."""
        counts = (self.takes(start, end).select("event_date", "user_id", "platform").unique()
                  .group_by("event_date").len().collect())
        return dict(zip(counts["event_date"].to_list(), counts["len"].to_list()))

    def takes(self, start: dt.date, end: dt.date) -> pl.LazyFrame:
        """The classes taken on event days [start, end] (the positive training examples):
        event_date, user_id, class_id, platform."""
        return (
            self.scan("training_examples")
            .filter((pl.col("event_date") >= start) & (pl.col("event_date") <= end)
                    & (pl.col("label_take") == 1))
            .select("event_date", "user_id", "class_id", "platform")
        )

    def class_popularity_at(self, feature_date: dt.date, columns: Sequence[str]) -> pl.DataFrame:
        """class_id + the `class_`-prefixed popularity `columns` of class_features_daily at a
        date (`Dataset.popularity_columns`; those the table lacks are left out)."""
        cf = self.scan("class_features_daily")
        present = set(cf.collect_schema().names())
        return cf.filter(pl.col("feature_date") == feature_date).select(
            "class_id", *[pl.col(c).alias(CLASS_PREFIX + c) for c in columns if c in present]
        ).collect()

    def _latest_bronze(self, table: str, key: str) -> tuple[pl.LazyFrame, set[str]]:
        """A bronze table's latest landing per `key`, and its column names."""
        lf = self.scan(table, layer="bronze")
        names = set(lf.collect_schema().names())
        order = [c for c in ("landing_date", "_ingested_at") if c in names]
        if order:
            lf = lf.sort(order, descending=True, nulls_last=True)
        return lf.unique(subset=[key], keep="first", maintain_order=True), names

    @staticmethod
    def _release(names: set[str]) -> pl.Expr:
        return (pl.col("release_ts").dt.convert_time_zone("UTC").dt.date()
                if "release_ts" in names else pl.col("release_date")).alias("release_date")

    def class_display(self) -> pl.DataFrame:
        """What the app shows of a class: class_id, title, instructor (the name, bronze
        `instructors`; the id where it has none), discipline, duration_min, release_date."""
        lf, names = self._latest_bronze("classes", "class_id")
        try:
            instructors = self._latest_bronze("instructors", "instructor_id")[0].select(
                pl.col("instructor_id").cast(pl.Utf8), pl.col("name").cast(pl.Utf8))
        except FileNotFoundError:  # no instructors table: the ids
            instructors = pl.LazyFrame(schema={"instructor_id": pl.Utf8, "name": pl.Utf8})
        return (
            lf.select(pl.col("class_id").cast(pl.Utf8), pl.col("title").cast(pl.Utf8),
                      pl.col("instructor_id").cast(pl.Utf8), pl.col("discipline").cast(pl.Utf8),
                      pl.col("duration_min").cast(pl.Int32), self._release(names))
            .join(instructors, on="instructor_id", how="left")
            .select("class_id", "title", pl.coalesce("name", "instructor_id").alias("instructor"),
                    "discipline", "duration_min", "release_date")
            .collect()
        )

    def class_catalogue(self) -> pl.DataFrame:
        """The static class columns of bronze `classes` (the latest landing per class_id)."""
        lf, names = self._latest_bronze("classes", "class_id")
        release = self._release(names)
        return (
            lf.select(
                pl.col("class_id").cast(pl.Utf8),
                pl.col("instructor_id").cast(pl.Utf8),
                pl.col("discipline").cast(pl.Utf8),
                pl.col("equipment").cast(pl.Utf8),
                pl.col("duration_min").cast(pl.Int32),
                pl.col("difficulty").cast(pl.Float64),
                pl.col("body_focus").cast(pl.Utf8),
                pl.col("music_genre").cast(pl.Utf8),
                release,
            )
            .collect()
        )

    def item_catalogue(self) -> pl.DataFrame:
        """The static item columns of gold class_features_daily (release_date, item_attr_*; one
        row per item, its latest)."""
        lf = self.scan("class_features_daily")
        names = lf.collect_schema().names()
        static = [c for c in names if c == "release_date" or c.startswith(ITEM_ATTR_PREFIX)]
        return (
            lf.select("class_id", "feature_date", *static)
            .sort("feature_date", descending=True)
            .unique(subset=["class_id"], keep="first", maintain_order=True)
            .select(pl.col("class_id").cast(pl.Utf8), *static)
            .collect()
        )


__all__ = ["AFFINITY_TABLE", "ATTRIBUTE_AFFINITY_TABLE", "GOLD_TABLES", "OPTIONAL_TABLES", "GoldStore", "days_for_rank",
           "user_kept"]
