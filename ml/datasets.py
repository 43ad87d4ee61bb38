"""What kind of data the flow runs on: one `Dataset` interface, two implementations, and the
only place that knows there are two.

* `FitnessDataset` (`FITNESS`): the simulator's fitness platform: a bronze class catalogue,
  instructor affinities, the bike / tread / app platforms, four home-screen rows, and (when a
  simulator wrote the landing zone) an oracle.
* `MappedDataset` (`MAPPED`): any interaction log imported through a mapping file (bring your
  own data): the item's static columns and popularity from gold class_features_daily, no
  affinity, the platforms the data holds, one "For you" row, and a temporal split with no oracle.

Everything that differs between them is a member here: the feature spec, the popularity
columns, the catalogue, the active users, the platforms, the list context, the rows, the
evaluation protocol, the gold inputs and quality suites, the dbt target and vars. Code outside
this module takes a `Dataset` and asks it; it never asks which one it is (tests/test_layout.py
holds that). `dataset_for(settings)` picks it from the lakehouse settings; `dataset_named` from
the name a saved `FeatureSpec` carries. `name` is the one string left: the tag saved with the
encoders and the dbt `dataset` var.

No Dagster here; lakehouse modules are imported where a member needs them.

Over 400 lines on purpose: every difference between the two datasets lives here, which is
what the module is for.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import polars as pl

from lakehouse.quality.config import GOLD_TABLES as FITNESS_GOLD_SUITES
from lakehouse.quality.config import MAPPED_GOLD_TABLES as MAPPED_GOLD_SUITES

from ml.context import fitness_list_context, mapped_list_context, usual_hour
from ml.features import (
    AFFINITY_COLUMN,
    ATTR_AFFINITY_PREFIX,
    CLASS_POPULARITY,
    DATASETS,
    ITEM_ATTR_PREFIX,
    MAPPED_CLASS_POPULARITY,
    MULTI_VALUE_SEPARATOR,
    PLATFORMS,
    FeatureSpec,
    default_spec,
)
from ml.gold import AFFINITY_TABLE, ATTRIBUTE_AFFINITY_TABLE, GOLD_TABLES, GoldStore, day_span

if TYPE_CHECKING:  # pragma: no cover
    from ml.rows import RowSpec

# The user_features_daily columns a fitness example joins (the spec picks among them).
USER_FEATURE_COLUMNS = (
    "fitness_level", "birth_year", "gender", "country", "owns_bike", "owns_tread",
    "days_since_signup", "workouts_total", "workouts_7d", "workouts_28d", "minutes_7d",
    "minutes_28d", "completion_rate_28d", "days_since_last_workout", "last_discipline",
    "last_body_focus", "last_duration_min", "last_platform", "last_instructor_id", "last_class_id",
    "top_instructor_id", "top_instructor_share", "top_discipline",
    "share_cycling", "share_running", "share_walking", "share_strength", "share_yoga",
    "share_stretching", "share_meditation", "share_cardio", "share_pilates",
    "usual_hour_bike", "usual_hour_tread", "usual_hour_app",
    "session_minutes_weekday", "session_minutes_weekend",
    "music_likes_total", "music_likes_28d", "bookmarks_total", "bookmarks_28d",
)
SCORING_CANDIDATES = "scoring_candidates"


class Dataset(ABC):
    """What the flow needs to know about the data it runs on (see the module docstring)."""

    name: str  # the tag saved with a FeatureSpec, and the dbt `dataset` var
    popularity_columns: tuple[str, ...]  # of class_features_daily, read prefixed `class_`
    # the platforms lists and rows are built for; None: those the day's data holds
    platforms: tuple[str, ...] | None
    cap_column: str | None  # the default per-row cap column of the inference (None: no cap)
    strict_cap_column: bool  # a cap column missing from the candidates is an error
    include_ids: bool  # the default of user_id / class_id embeddings
    activity_column: str  # user_features_daily count that makes a user cold (evaluation)
    simulated: bool  # a simulator may have made the data (then the oracle is evaluated)
    gold_inputs: tuple[str, ...]  # the gold tables the model and the inference read
    gold_suite_tables: Mapping[str, dict]  # `lakehouse.quality.config`: its gold marts' GX rules
    dbt_target: str  # dbt's target folder, relative to the dbt project
    # how bronze arrives: "landing_zone" (dated landing files, ingested and audited per day) or
    # "mapping_import" (a mapping file's sources, imported whole); the orchestration builds
    # bronze's assets and sensors from this kind, never from the dataset's name
    bronze_source: str
    # the demo's run config (`orchestration.demo`): model and evaluation overrides
    demo_training: dict
    demo_evaluation: dict | None
    ui_command: str  # how to open the Dagster UI on this data
    candidates_phrase: str  # "candidates: every <this> by the day before"
    items_word: str  # what the evaluation calls the things it ranks

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- the dbt side and the gates ---------------------------------------------------------------

    @property
    def dbt_vars(self) -> dict[str, str]:
        """The vars every dbt invocation passes (the var that enables one family of models)."""
        return {"dataset": self.name}

    @abstractmethod
    def first_day(self, settings: Any) -> dt.date | None:
        """The first day of the daily partitions (None: the simulator's default)."""

    @property
    @abstractmethod
    def bronze_tables(self) -> tuple[str, ...]:
        """The bronze tables this data lands in."""

    @abstractmethod
    def bronze_suites(self) -> list:
        """The GX suites (`lakehouse.quality.gates.TableSuite`) of its bronze tables."""

    def gold_suites(self, published: dict[str, str], negatives_per_positive: float,
                    layer: str = "gold") -> list:
        """The GX suites of its published gold marts (model -> partition column)."""
        from lakehouse.quality.gates import gold_suites

        return gold_suites(published, negatives_per_positive, layer, tables=self.gold_suite_tables)

    # -- features and examples ------------------------------------------------------------------

    def matches(self, spec: FeatureSpec) -> bool:
        """Whether a feature spec (a trained model's) was built on this kind of data."""
        return spec.dataset == self.name

    @abstractmethod
    def feature_spec(self, gold: GoldStore, *, include_ids: bool = False) -> FeatureSpec:
        """The feature spec of a model trained on this data."""

    @abstractmethod
    def catalogue(self, gold: GoldStore) -> pl.DataFrame:
        """The static class (item) columns, one row per class_id."""

    @abstractmethod
    def display_catalogue(self, gold: GoldStore) -> pl.DataFrame:
        """What a home-screen card shows of a class: class_id + those of
        `homefeed.payload.CLASS_FIELDS` the data has, and release_date (for "new")."""

    @abstractmethod
    def example_user_columns(self, users: pl.LazyFrame, taken: set[str]) -> list[str]:
        """The user_features_daily columns an example joins (`taken`: the example's own)."""

    def join_example_affinity(self, examples: pl.LazyFrame, gold: GoldStore,
                              fdate_filter: pl.Expr) -> pl.LazyFrame:
        """The examples with the user's affinity to the class's instructor or attributes (the
        lookup pair features), if the data has any."""
        return examples

    # the gold table the lookup pair features read (None: the data has none), and its field
    # that says how strong an affinity is (a user's rows come strongest first)
    affinity_table: str | None = None
    affinity_weight: str | None = None

    def affinity_entry(self) -> list:
        """One affinity row as the lookup reads it: `column` (the class column it is keyed by),
        `key` (that column's value) and the fields (expressions over `affinity_table`)."""
        return []

    def with_affinity(self, gold: GoldStore, feature_date: dt.date,
                      users: pl.DataFrame) -> pl.DataFrame:
        """Users (user_id + features) with their affinity rows as one list column
        (`AFFINITY_COLUMN`: structs of `affinity_entry`, the pair features' lookup, strongest
        first by `affinity_weight`: retrieval reads a user's first ones), if the data has any."""
        aff = gold.affinity(self.affinity_table) if self.affinity_table else None
        if aff is None:
            return users
        ids = users["user_id"].to_list()
        entry = pl.struct(*self.affinity_entry())
        if self.affinity_weight is not None:  # ties by key: the same order in every run
            entry = entry.sort_by(pl.col(self.affinity_weight), self.affinity_entry()[1], descending=[True, False],
                                  nulls_last=True)
        per_user = (aff.filter((pl.col("feature_date") == feature_date) & pl.col("user_id").is_in(ids))
                    .group_by("user_id")
                    .agg(entry.alias(AFFINITY_COLUMN))
                    .collect())
        return users.join(per_user, on="user_id", how="left")

    # -- lists, rows and the users they are for --------------------------------------------------

    @abstractmethod
    def active_users(self, users: pl.LazyFrame, feature_date: dt.date) -> pl.LazyFrame:
        """The users the daily rows are for: active in the last 28 days or new on the date."""

    @abstractmethod
    def uses_platform(self, users: pl.DataFrame, platform: str) -> pl.Series:
        """Whether each user gets rows on the platform."""

    @abstractmethod
    def list_context(self, users: pl.DataFrame, platform: str, day: dt.date,
                     hour: int | pl.Series | None = None) -> pl.DataFrame:
        """The context a "For you" list assumes (`ml.context`)."""

    def list_default_hour(self, gold: GoldStore, fdate: dt.date) -> int | None:
        """The hour of an evaluation list whose user has no usual hour yet (None: the ranker
        averages over several hours instead)."""
        return None

    @abstractmethod
    def usual_hour_columns(self, platforms: Sequence[str], names: set[str]) -> dict[str, str]:
        """platform -> the user_features_daily column of the user's usual hour there."""

    @abstractmethod
    def most_common_hour(self, column: str) -> pl.Expr:
        """The most common usual hour of the day's active users (a platform's default hour)."""

    @property
    @abstractmethod
    def rows(self) -> tuple["RowSpec", ...]:
        """The default home-screen rows."""

    def check_rows(self, rows: Sequence["RowSpec"]) -> None:
        """Raise ValueError for a row this data cannot fill."""

    # -- the evaluation protocol ------------------------------------------------------------------

    @abstractmethod
    def evaluation_notes(self, days: Sequence[dt.date],
                         train_window: tuple[dt.date, dt.date] | None, *, oracle: bool,
                         list_unit: str = "day") -> list[str]:
        """The report's notes on what the evaluation compares (`oracle`: one is evaluated)."""

    def serve_command(self, cache_dir: str) -> str:
        """How to serve the published cache (`orchestration.demo`)."""
        return "make serve"

    def evaluation_protocol(self, settings: Any):
        """This data's `EvaluationProtocol` (exclusions, the fewest lists, how the held-out
        window is sized): by default its defaults (14 days, 100 lists, the config's days);
        serving excludes the same window."""
        from lakehouse.mapped.mapping import EvaluationProtocol

        return EvaluationProtocol()


@dataclass(frozen=True, repr=False)
class FitnessDataset(Dataset):
    """The simulator's fitness platform."""

    name = "fitness"
    popularity_columns = CLASS_POPULARITY
    platforms = PLATFORMS
    cap_column = "instructor_id"
    strict_cap_column = False
    include_ids = False  # the class attributes carry cold start
    activity_column = "workouts_total"
    simulated = True
    affinity_table = AFFINITY_TABLE
    affinity_weight = "share_56d"
    gold_inputs = (*GOLD_TABLES, SCORING_CANDIDATES, AFFINITY_TABLE)
    gold_suite_tables = FITNESS_GOLD_SUITES
    dbt_target = "target"
    bronze_source = "landing_zone"
    demo_training = {}
    demo_evaluation = None
    ui_command = "make ui"
    candidates_phrase = "class of the platform released"
    items_word = "classes"

    def first_day(self, settings: Any) -> dt.date | None:
        """The landing zone's first day (the simulator's calendar starts there; None: nothing
        landed yet, the default first day)."""
        from lakehouse.landing.manifest import first_landed_day

        return first_landed_day(settings.landing_uri)

    @property
    def bronze_tables(self) -> tuple[str, ...]:
        from lakehouse.contract import ENTITIES
        from lakehouse.landing.ingest import QUARANTINE

        return (*(e.name for e in ENTITIES), QUARANTINE)

    def bronze_suites(self) -> list:
        from lakehouse.quality.gates import bronze_suites

        return bronze_suites()

    def feature_spec(self, gold: GoldStore, *, include_ids: bool = False) -> FeatureSpec:
        return default_spec(include_ids=include_ids)

    def catalogue(self, gold: GoldStore) -> pl.DataFrame:
        return gold.class_catalogue()

    def display_catalogue(self, gold: GoldStore) -> pl.DataFrame:
        return gold.class_display()

    def example_user_columns(self, users: pl.LazyFrame, taken: set[str]) -> list[str]:
        """The known columns, and any numeric one a dbt model added (`add_features` picks)."""
        schema = users.collect_schema()
        added = [c for c, t in schema.items() if c not in USER_FEATURE_COLUMNS and c not in taken
                 and c not in ("user_id", "feature_date") and t.is_numeric()]
        return [*(c for c in USER_FEATURE_COLUMNS if c in schema), *added]

    def join_example_affinity(self, examples: pl.LazyFrame, gold: GoldStore,
                              fdate_filter: pl.Expr) -> pl.LazyFrame:
        affinity = gold.affinity(self.affinity_table)
        if affinity is None:  # an older lakehouse without the table: the features exist, as "no affinity"
            return examples.with_columns(pl.lit(None, pl.Float64).alias("user_instructor_share"),
                                         pl.lit(None, pl.Float64).alias("user_instructor_workouts"))
        aff = affinity.filter(fdate_filter).select(
            "user_id", "feature_date", "instructor_id",
            pl.col("share_56d").cast(pl.Float64).alias("user_instructor_share"),
            pl.col("workouts_56d").cast(pl.Float64).alias("user_instructor_workouts"))
        return examples.join(aff, on=["user_id", "feature_date", "instructor_id"], how="left")

    def affinity_entry(self) -> list:
        return [pl.lit("instructor_id").alias("column"), pl.col("instructor_id").alias("key"),
                "share_56d", "workouts_56d"]

    def active_users(self, users: pl.LazyFrame, feature_date: dt.date) -> pl.LazyFrame:
        return users.filter((pl.col("feature_date") == feature_date)
                            & ((pl.col("workouts_28d").fill_null(0) > 0)
                               | (pl.col("days_since_signup") == 0)))

    def uses_platform(self, users: pl.DataFrame, platform: str) -> pl.Series:
        """The app for everyone; a device if owned or used."""
        if platform == "app":
            return pl.Series([True] * users.height)
        owns = users[f"owns_{platform}"].fill_null(False) if f"owns_{platform}" in users.columns \
            else pl.Series([False] * users.height)
        used = usual_hour(users, platform).is_not_null()
        return (owns | used).alias("uses")

    def list_context(self, users: pl.DataFrame, platform: str, day: dt.date,
                     hour: int | pl.Series | None = None) -> pl.DataFrame:
        return fitness_list_context(users, platform, day, hour)

    def usual_hour_columns(self, platforms: Sequence[str], names: set[str]) -> dict[str, str]:
        return {p: f"usual_hour_{p}" for p in platforms if f"usual_hour_{p}" in names}

    def most_common_hour(self, column: str) -> pl.Expr:
        return pl.col(column).round().cast(pl.Int32).drop_nulls().mode().first().alias(column)

    @property
    def rows(self) -> tuple["RowSpec", ...]:
        from ml.rows import DEFAULT_ROWS

        return DEFAULT_ROWS

    def evaluation_notes(self, days: Sequence[dt.date],
                         train_window: tuple[dt.date, dt.date] | None, *, oracle: bool,
                         list_unit: str = "day") -> list[str]:
        if oracle:
            return []
        return ["no oracle: the data has no simulator behind it (no _simulator/config.json "
                "in the landing zone); compared with popularity and the ablation only"]


@dataclass(frozen=True, repr=False)
class MappedDataset(Dataset):
    """Any interaction log imported through a mapping file (bring your own data)."""

    name = "mapped"
    popularity_columns = MAPPED_CLASS_POPULARITY
    platforms = None  # those of the day's takes (evaluation) or candidates (inference)
    cap_column = None  # no instructor; a mapped cap names an item column
    strict_cap_column = True
    include_ids = True  # its items may have no attributes
    activity_column = "events_total"
    simulated = False
    affinity_table = ATTRIBUTE_AFFINITY_TABLE
    affinity_weight = "share"
    gold_inputs = (*GOLD_TABLES, SCORING_CANDIDATES, ATTRIBUTE_AFFINITY_TABLE)
    gold_suite_tables = MAPPED_GOLD_SUITES
    dbt_target = "target/mapped"  # its own manifest: switching datasets never reads the other's
    bronze_source = "mapping_import"
    # a smaller dataset than the simulator's: hold out the last 3 days, evaluate every user
    demo_training = {"valid_days": 3}
    demo_evaluation = {"eval_user_fraction": 1.0}
    ui_command = "make byod-ui MAPPING=..."
    candidates_phrase = "item seen on the platform"
    items_word = "items"

    def first_day(self, settings: Any) -> dt.date | None:
        from lakehouse.mapped.mapping_file import load_mapping

        return load_mapping(settings.mapping_path).first_day  # a bad mapping: a clear error here

    def evaluation_protocol(self, settings: Any):
        from lakehouse.mapped.mapping_file import load_mapping

        return load_mapping(settings.mapping_path).evaluation  # its `evaluation` section

    @property
    def bronze_tables(self) -> tuple[str, ...]:
        from lakehouse.mapped.staging import INTERACTIONS, ITEMS, USERS

        return (INTERACTIONS, USERS, ITEMS)

    def bronze_suites(self) -> list:
        from lakehouse.quality.gates import mapped_bronze_suites

        return mapped_bronze_suites()

    def feature_spec(self, gold: GoldStore, *, include_ids: bool = False) -> FeatureSpec:
        """`ml.features.mapped_spec` of the columns the gold tables have."""
        return gold.mapped_spec(include_ids=include_ids)

    def catalogue(self, gold: GoldStore) -> pl.DataFrame:
        """release_date and item_attr_* from gold class_features_daily (static per item)."""
        return gold.item_catalogue()

    def display_catalogue(self, gold: GoldStore) -> pl.DataFrame:
        """An item attribute named like a card field (item_attr_title, ..._instructor,
        ..._discipline, ..._duration_min) fills it; a multi-valued one is joined with ", "."""
        from homefeed.payload import CLASS_FIELDS

        items = gold.item_catalogue()
        shown = []
        for name in CLASS_FIELDS:
            col = items.get_column(ITEM_ATTR_PREFIX + name, default=None)
            if col is not None:
                expr = pl.col(col.name)
                shown.append((expr.list.join(", ") if col.dtype == pl.List(pl.Utf8) else expr).alias(name))
        return items.select("class_id", *shown, *[c for c in ("release_date",) if c in items.columns])

    def example_user_columns(self, users: pl.LazyFrame, taken: set[str]) -> list[str]:
        """Every user column (the spec picks), but none the examples already have."""
        return [c for c in users.collect_schema().names() if c not in taken]

    def join_example_affinity(self, examples: pl.LazyFrame, gold: GoldStore,
                              fdate_filter: pl.Expr) -> pl.LazyFrame:
        """One user_share_of_<attribute> per categorical item attribute the examples carry: the
        user's share of takes with the item's value (gold user_attribute_affinity at
        feature_date), the mean over its values for a multi-valued one, 0 for a value without a
        row; null where the item has no value (or no table: an older lakehouse)."""
        schema = examples.collect_schema()
        attributes = [c for c, t in schema.items()
                      if c.startswith(ITEM_ATTR_PREFIX) and t == pl.Utf8]
        if not attributes:
            return examples
        affinity = gold.affinity(self.affinity_table)
        if affinity is None:
            return examples.with_columns(pl.lit(None, pl.Float64).alias(ATTR_AFFINITY_PREFIX + a)
                                         for a in attributes)
        keys = ["user_id", "feature_date"]
        for attribute in attributes:
            name = ATTR_AFFINITY_PREFIX + attribute
            rows = affinity.filter(fdate_filter & (pl.col("attribute") == attribute)).select(
                *keys, pl.col("value").alias("_value"), pl.col("takes").cast(pl.Int64),
                # the user's takes in the window (share = takes / that), exact as an integer
                (pl.col("takes") / pl.col("share")).round().cast(pl.Int64).alias("_window"))
            # per (user, date, the item's value(s)): no per-example key, so date filters reach
            # every scan (iter_batches collects a few days at a time)
            shares = (examples.select(*keys, attribute).unique()
                      .with_columns(pl.col(attribute).str.split(MULTI_VALUE_SEPARATOR).alias("_value"))
                      .explode("_value")
                      .join(rows, on=[*keys, "_value"], how="left")
                      .group_by(*keys, attribute)
                      # the mean share from integer sums: the same in any row order (a float
                      # mean of a group depends on how threads split it)
                      .agg(pl.when(pl.col("_value").is_null().all()).then(None)
                           .when(pl.col("_window").max().is_null()).then(0.0)
                           .otherwise(pl.col("takes").sum()
                                      / (pl.col("_value").count() * pl.col("_window").max()))
                           .alias(name)))
            examples = examples.join(shares, on=[*keys, attribute], how="left", nulls_equal=True)
        return examples

    def affinity_entry(self) -> list:
        return [pl.col("attribute").alias("column"), pl.col("value").alias("key"),
                pl.col("share").cast(pl.Float64)]

    def active_users(self, users: pl.LazyFrame, feature_date: dt.date) -> pl.LazyFrame:
        return users.filter((pl.col("feature_date") == feature_date)
                            & ((pl.col("events_28d").fill_null(0) > 0)
                               | (pl.col("days_since_first_seen") == 0)))

    def uses_platform(self, users: pl.DataFrame, platform: str) -> pl.Series:
        """Every platform for everyone (no per-platform usage in the user features)."""
        return pl.Series([True] * users.height)

    def list_context(self, users: pl.DataFrame, platform: str, day: dt.date,
                     hour: int | pl.Series | None = None) -> pl.DataFrame:
        return mapped_list_context(users, platform, day, hour)

    def list_default_hour(self, gold: GoldStore, fdate: dt.date) -> int | None:
        """The most common usual hour among the users at fdate (ties: the earliest), else the
        most common hour of the takes up to fdate, else 18."""
        uf = gold.scan("user_features_daily")
        for lf, col, filt in (
            (uf, "usual_hour", pl.col("feature_date") == fdate),
            (gold.scan("training_examples"), "hour_of_day",
             (pl.col("event_date") <= fdate) & (pl.col("label_take") == 1)),
        ):
            if col not in lf.collect_schema().names():
                continue
            top = (lf.filter(filt).select(pl.col(col).cast(pl.Float64).round().cast(pl.Int32).alias("h"))
                   .drop_nulls().group_by("h").len().sort(["len", "h"], descending=[True, False])
                   .head(1).collect())
            if top.height:
                return int(top["h"][0])
        return 18

    def usual_hour_columns(self, platforms: Sequence[str], names: set[str]) -> dict[str, str]:
        """One usual hour per user, over every platform."""
        return {p: "usual_hour" for p in platforms} if "usual_hour" in names else {}

    def most_common_hour(self, column: str) -> pl.Expr:
        return pl.col(column).round().cast(pl.Int32).drop_nulls().mode().min().alias(column)

    @property
    def rows(self) -> tuple["RowSpec", ...]:
        from ml.rows import MAPPED_ROWS

        return MAPPED_ROWS

    def check_rows(self, rows: Sequence["RowSpec"]) -> None:
        if any(r.after_last_workout for r in rows):
            raise ValueError("the recent-state row (after_last_workout) needs the fitness prev_* "
                             "context: not available on mapped data")

    def evaluation_notes(self, days: Sequence[dt.date],
                         train_window: tuple[dt.date, dt.date] | None, *, oracle: bool,
                         list_unit: str = "day") -> list[str]:
        """The report's plain statement of what a mapped evaluation is (and is not)."""
        if oracle:
            raise ValueError("mapped data has no simulator: there is no oracle to evaluate")
        listed = day_span(days)
        trained = (f"trained on the event days {train_window[0].isoformat()}..{train_window[1].isoformat()}"
                   if train_window else f"trained on the days before {min(days).isoformat()}")
        lists = ("one list per user and platform over the whole window, ranked from the features "
                 "as of the day before it; relevant = the items taken in the window"
                 if list_unit == "window" else
                 "features as of the day before each list; relevant = the items taken that day")
        return ["no oracle: this is a mapped dataset (an interaction log imported through a mapping "
                "file) with no simulator behind it, so no ranker knows the users' true preferences; "
                "the model is compared with popularity and the context-free ablation only. "
                f"Temporal split: {trained}, evaluated on the held-out last day(s) {listed} ({lists})."]

    def serve_command(self, cache_dir: str) -> str:
        return f"HOMEFEED_CACHE_DIR={cache_dir} make serve"


FITNESS = FitnessDataset()
MAPPED = MappedDataset()
_BY_NAME: dict[str, Dataset] = {d.name: d for d in (FITNESS, MAPPED)}


def dataset_named(name: str) -> Dataset:
    """The dataset of a name (a saved FeatureSpec's `dataset`, the dbt var)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}") from None


def dataset_of(spec: FeatureSpec) -> Dataset:
    """The dataset a feature spec (a trained model's) was built on."""
    return dataset_named(spec.dataset)


def dataset_for(settings: Any) -> Dataset:
    """The dataset the lakehouse settings (`LakehouseSettings`) describe: the one of a mapping
    file when they name one (LAKEHOUSE_MAPPING), else the simulator's landing zone."""
    return MAPPED if settings.mapping_path else FITNESS


__all__ = ["FITNESS", "MAPPED", "USER_FEATURE_COLUMNS", "Dataset", "FitnessDataset", "MappedDataset",
           "dataset_for", "dataset_named", "dataset_of"]
