"""Feature spec and encoders: a joined example frame (see `ml.examples`) -> `ml.batch.Batch`.

The input frame is what `ml.examples.read_examples` returns: one row per training example
(or scoring candidate) with the context columns of `training_examples`, the user's
`user_features_daily` columns (names unchanged; all null for a cold-start user), the class's
static catalogue columns (`instructor_id`, `discipline`, ...) and its popularity columns from
`class_features_daily` prefixed ``class_`` (all null for a class released on the event day).

`prepare()` adds the derived columns (user x class crosses, missing flags, duration bucket);
`Encoders` maps the spec's sparse columns to vocabulary ids (0 = out of vocabulary / null) and
normalizes the dense columns with statistics fitted on the training frame. The encoders
serialize to JSON (spec included) and travel with the model.

No user_id / class_id features by default, so new users and classes score through their
attributes; `default_spec(include_ids=True)` adds them.

Two datasets (`FeatureSpec.dataset`, saved with the encoders): "fitness" (the simulator's gold
tables, `default_spec`) and "mapped" (any interaction log imported through a mapping file: gold
tables of the same names with generic columns, `mapped_spec`). A "mapped" frame has the item id
in `class_id`, the user's `user_features_daily` columns (events_*, usual_hour, last_ctx_*,
user_attr_*), the item's static `release_date` / `item_attr_*` and its `class_`-prefixed
popularity (`MAPPED_CLASS_POPULARITY`), and the event's context (platform, hour_of_day,
day_of_week, is_weekend, ctx_*).

Over 400 lines on purpose: this module travels inside the logged model (`ml/serving.py`
loads it without the training code), so the spec, the derived columns and the encoders stay in
one self-contained file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from ml.batch import HEADS, Batch
from ml.cooccurrence import COOCCURRENCE, Neighbours

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl
# polars is imported where frames are handled, so the spec, the encoders' statistics and the
# pair/factorized scoring import without it (e.g. on a GPU machine with torch alone)

DISCIPLINES = (
    "cycling", "running", "walking", "strength", "yoga",
    "stretching", "meditation", "cardio", "pilates",
)
PLATFORMS = ("bike", "tread", "app")
LABEL_COLUMNS = tuple(f"label_{h}" for h in HEADS)  # label_take, label_complete, label_music_like

# Popularity columns of class_features_daily, as they appear (prefixed) in the joined frame.
CLASS_POPULARITY = (
    "workouts_1d", "workouts_7d", "workouts_28d", "workouts_total", "completion_rate",
    "music_like_rate", "bookmarks_7d", "impressions_7d", "take_rate_7d",
)
CLASS_PREFIX = "class_"

DATASETS = ("fitness", "mapped")
# Popularity columns of class_features_daily of a mapped dataset (prefixed in the joined frame).
MAPPED_CLASS_POPULARITY = (
    "events_1d", "events_7d", "events_28d", "events_total", "complete_rate", "music_like_rate",
)
# Prefixes of the columns a mapping file declares (contract sections 2 and 3).
CTX_PREFIX, LAST_CTX_PREFIX = "ctx_", "last_ctx_"
USER_ATTR_PREFIX, ITEM_ATTR_PREFIX = "user_attr_", "item_attr_"
# A mapped user's recent state (user_features_daily): the items of the last three takes of the
# latest day with one (id features: with `include_ids`) and the last item's attributes.
RECENT_ITEMS = ("last_item_id", "last_item_id_2", "last_item_id_3")
LAST_ITEM_ATTR_PREFIX = "last_" + ITEM_ATTR_PREFIX

# Context of the moment: dropped by the context-free ablation (`with_context(spec, False)`).
CONTEXT_FEATURES = frozenset({
    "platform", "hour_of_day", "day_of_week", "is_weekend", "prev_discipline",
    "prev_body_focus", "prev_duration_min", "minutes_since_prev", "position_in_session",
    "has_prev", "hour_gap_usual",
})

# Columns that describe the class alone (static catalogue, popularity, age): the class side of
# a (user, class) pair. Everything else in a spec is the user/context side, except the pair features (`pair_feature`).
CLASS_SIDE = frozenset({
    "class_id", "instructor_id", "discipline", "equipment", "body_focus", "music_genre",
    "duration_bucket", "duration_min", "difficulty", "release_date", "class_age_days",
    "class_is_new", *(CLASS_PREFIX + c for c in CLASS_POPULARITY),
    *(CLASS_PREFIX + c for c in MAPPED_CLASS_POPULARITY),
})


def class_side(name: str) -> bool:
    """Whether a feature describes the class (item) alone: `CLASS_SIDE` or a mapped item_attr_*."""
    return name in CLASS_SIDE or name.startswith(ITEM_ATTR_PREFIX)
# Features of the pair itself, as computed by `prepare`: name -> (kind, user column, class column).
# "share": the user's share_<d> for the class's discipline d; "same": user value == class value;
# "lookup": a field (the "user column") of the user's affinity row for the class's value of the
# class column: gold user_instructor_affinity (fitness) or user_attribute_affinity (mapped),
# carried per user in AFFINITY_COLUMN when scoring lists (a list of structs: `column` (the class
# column), `key` (its value) and the fields), joined per example when training.
AFFINITY_COLUMN = "affinity"
PAIR_FEATURES = {
    "user_instructor_share": ("lookup", "share_56d", "instructor_id"),
    "user_instructor_workouts": ("lookup", "workouts_56d", "instructor_id"),
    "user_share_of_class_discipline": ("share", "share_", "discipline"),
    "is_top_instructor": ("same", "top_instructor_id", "instructor_id"),
    "is_last_instructor": ("same", "last_instructor_id", "instructor_id"),
    "is_top_discipline": ("same", "top_discipline", "discipline"),
    # "cooc": the mean similarity of the class to the user's recent items (the spec's
    # `recent_items`, `ml.cooccurrence`), from the neighbours the encoders carry; point in time
    # in the training frame
    COOCCURRENCE: ("cooc", "recent_items", "class_id"),
}
# A mapped dataset's lookups, one per categorical item attribute: the user's share of recent
# takes whose item has the candidate's value (gold user_attribute_affinity), named this prefix +
# the item column, e.g. user_share_of_item_attr_genre.
ATTR_AFFINITY_PREFIX = "user_share_of_"
# A multi-valued attribute's values, as the import joins them (lakehouse.mapped.mapping): its
# lookup is the mean share over the item's values (a value without a row counts 0).
MULTI_VALUE_SEPARATOR = "\x1f"


def pair_feature(name: str) -> tuple[str, str, str] | None:
    """(kind, user column or field, class column) of a pair feature; None for any other."""
    if name in PAIR_FEATURES:
        return PAIR_FEATURES[name]
    if name.startswith(ATTR_AFFINITY_PREFIX + ITEM_ATTR_PREFIX):
        return ("lookup", "share", name[len(ATTR_AFFINITY_PREFIX):])
    return None

# The most values a multi-hot bag keeps per row (more are dropped, in their order).
MAX_BAG = 16

# Large value for "never happened" in days/minutes-since columns (with a missing flag beside it).
NEVER_DAYS = 3650.0
NEVER_MINUTES = 1440.0


class FeatureError(ValueError):
    """Input that cannot become features: no rows, a missing column, NaN or infinite values."""


@dataclass
class FeatureSpec:
    """Which columns are features, in which order, and how dense ones are transformed.

    sparse / dense: ordered column names (of the frame after `prepare`).
    context_features: names that describe the moment (the ablation drops them).
    log1p: dense columns transformed with log1p (after clipping at 0) before normalization.
    fill_null: value for nulls of a dense column before the transform (else: the fitted mean).
    dataset: which gold tables the spec reads, "fitness" or "mapped" (an older saved spec
        without it is fitness).
    bags: sparse features that hold several values (a multi-valued attribute, its values
        joined by MULTI_VALUE_SEPARATOR) -> the most values a row carries: a multi-hot bag of
        that many slots in `Batch.sparse` (unused slots -1), mean-pooled in the model. Set by
        `Encoders.fit` from the training frame; every other sparse feature is one slot.
    recent_items: the user columns that hold the ids of the user's last items, which
        COOCCURRENCE compares the class with (fitness: last_class_id; mapped: RECENT_ITEMS).
    """

    sparse: list[str]
    dense: list[str]
    context_features: set[str] = field(default_factory=lambda: set(CONTEXT_FEATURES))
    log1p: set[str] = field(default_factory=set)
    fill_null: dict[str, float] = field(default_factory=dict)
    dataset: str = "fitness"
    bags: dict[str, int] = field(default_factory=dict)
    recent_items: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        unknown = [b for b in self.bags if b not in self.sparse]
        if unknown:
            raise ValueError(f"bags {unknown} are not sparse features of the spec")
        if COOCCURRENCE in self.dense and not self.recent_items:
            raise ValueError(f"{COOCCURRENCE} needs the spec's recent_items (the user columns of "
                             "the last items' ids)")

    def slots(self) -> list[int]:
        """Slots per sparse feature, in spec order (1, or a bag's size)."""
        return [self.bags.get(name, 1) for name in self.sparse]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["context_features"] = sorted(self.context_features)
        d["log1p"] = sorted(self.log1p)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(
            sparse=list(d["sparse"]),
            dense=list(d["dense"]),
            context_features=set(d.get("context_features", ())),
            log1p=set(d.get("log1p", ())),
            fill_null={k: float(v) for k, v in d.get("fill_null", {}).items()},
            dataset=str(d.get("dataset", "fitness")),
            bags={k: int(v) for k, v in d.get("bags", {}).items()},
            recent_items=list(d.get("recent_items", ())),
        )


def default_spec(*, include_ids: bool = False, duration_bucket: bool = True,
                 cooccurrence: bool = True) -> FeatureSpec:
    """The default features: user side, class side, context, and user x class crosses
    (cooccurrence: with the class's similarity to the user's last class, `ml.cooccurrence`)."""
    user_sparse = [
        "fitness_level", "gender", "country", "top_instructor_id", "top_discipline",
        "last_discipline", "last_body_focus", "last_instructor_id", "last_platform",
    ]
    class_sparse = ["instructor_id", "discipline", "equipment", "body_focus", "music_genre"]
    if duration_bucket:
        class_sparse.append("duration_bucket")
    context_sparse = ["platform", "hour_of_day", "day_of_week", "prev_discipline", "prev_body_focus"]
    ids = ["user_id", "class_id"] if include_ids else []

    user_counts = [
        "workouts_total", "workouts_7d", "workouts_28d", "minutes_7d", "minutes_28d",
        "music_likes_total", "music_likes_28d", "bookmarks_total", "bookmarks_28d",
    ]
    user_dense = [
        *user_counts,
        "completion_rate_28d", "top_instructor_share",
        *[f"share_{d}" for d in DISCIPLINES],
        "days_since_signup", "days_since_last_workout", "never_worked_out", "user_is_cold",
        "last_duration_min", "session_minutes_weekday", "session_minutes_weekend",
        "owns_bike", "owns_tread",
    ]
    class_counts = [CLASS_PREFIX + c for c in
                    ("workouts_1d", "workouts_7d", "workouts_28d", "workouts_total",
                     "bookmarks_7d", "impressions_7d")]
    class_rates = [CLASS_PREFIX + c for c in ("completion_rate", "music_like_rate", "take_rate_7d")]
    class_dense = [*class_counts, *class_rates, "class_age_days", "class_is_new",
                   "difficulty", "duration_min"]
    context_dense = ["is_weekend", "prev_duration_min", "minutes_since_prev", "has_prev",
                     "position_in_session", "hour_gap_usual"]
    cross_dense = ["user_share_of_class_discipline", "is_top_instructor", "is_last_instructor",
                   "is_top_discipline", "user_instructor_share", "user_instructor_workouts",
                   *([COOCCURRENCE] if cooccurrence else [])]

    log1p = {
        *user_counts, *class_counts, "days_since_signup", "days_since_last_workout",
        "class_age_days", "minutes_since_prev", "user_instructor_workouts",
    }
    fill_null = {
        # a cold-start user has done nothing yet; a class released on the event day neither
        **{c: 0.0 for c in user_counts},
        **{f"share_{d}": 0.0 for d in DISCIPLINES},
        **{c: 0.0 for c in class_counts},
        "user_share_of_class_discipline": 0.0,
        "user_instructor_share": 0.0,  # no workout with this instructor in the window
        "user_instructor_workouts": 0.0,
        "days_since_last_workout": NEVER_DAYS,
        "minutes_since_prev": NEVER_MINUTES,
        "prev_duration_min": 0.0,
        "days_since_signup": 0.0,
        "top_instructor_share": 0.0,
        "owns_bike": 0.0,
        "owns_tread": 0.0,
    }
    if cooccurrence:
        fill_null[COOCCURRENCE] = 0.0  # no last class: nothing to be similar to
    return FeatureSpec(
        sparse=[*ids, *user_sparse, *class_sparse, *context_sparse],
        dense=[*user_dense, *class_dense, *context_dense, *cross_dense],
        context_features=set(CONTEXT_FEATURES),
        log1p=log1p,
        fill_null=fill_null,
        recent_items=["last_class_id"] if cooccurrence else [],
    )


def with_context(spec: FeatureSpec, enabled: bool) -> FeatureSpec:
    """The spec itself (enabled) or a copy without its context features (the ablation)."""
    return spec if enabled else without(spec, tuple(spec.context_features))


def _matches(column: str, name: str) -> bool:
    return column.startswith(name[:-1]) if name.endswith("*") else column == name


def without(spec: FeatureSpec, names: tuple[str, ...] | list[str]) -> FeatureSpec:
    """A copy of `spec` without the named features (a name ending in "*" is a prefix); the
    spec itself when nothing is named. Naming a feature the spec does not have is an error."""
    if not names:
        return spec
    features = [*spec.sparse, *spec.dense]

    def dropped(c: str) -> bool:
        return any(_matches(c, n) for n in names)

    unknown = [n for n in names if not any(_matches(c, n) for c in features)
               and n not in spec.context_features]
    if unknown:
        raise FeatureError(f"drop_features: {unknown} match no feature of the {spec.dataset} spec "
                           f"(features: {features})")
    return FeatureSpec(
        sparse=[c for c in spec.sparse if not dropped(c)],
        dense=[c for c in spec.dense if not dropped(c)],
        context_features=set(spec.context_features),
        log1p={c for c in spec.log1p if not dropped(c)},
        fill_null={k: v for k, v in spec.fill_null.items() if not dropped(k)},
        dataset=spec.dataset,
        bags={k: v for k, v in spec.bags.items() if not dropped(k)},
        recent_items=list(spec.recent_items),
    )


def with_added(spec: FeatureSpec, names: tuple[str, ...] | list[str], columns: Mapping[str, Any],
               table: str = "gold user_features_daily") -> FeatureSpec:
    """A copy of `spec` with numeric user columns added as dense features (a name ending in "*"
    is a prefix; `columns`: the user table's schema): a column a dbt model added to
    user_features_daily, or the shared user embeddings joined there. They are normalized with
    the fitted statistics, a null is the fitted mean. A name that matches no numeric column the
    spec does not already have is an error."""
    if not names:
        return spec
    cols = _columns(columns)
    have = {*spec.sparse, *spec.dense}
    added: list[str] = []
    unknown = []
    for n in names:
        hits = [c for c, t in cols.items()
                if _matches(c, n) and _kind(t) == "numeric" and c not in have and c not in added]
        unknown += [] if hits else [n]
        added += hits
    if unknown:
        numeric = [c for c, t in cols.items() if _kind(t) == "numeric" and c not in have]
        raise FeatureError(f"add_features: {unknown} match no numeric column of {table} that is not "
                           f"already a feature (such columns: {numeric or 'none'})")
    return replace(spec, dense=[*spec.dense, *added])


# ---------------------------------------------------------------------------------------------
# The spec of a mapped dataset

_TEXT_TYPES = ("string", "str", "utf8", "large_string", "large_utf8", "categorical", "enum")
_NUMERIC_TYPES = ("int", "uint", "float", "double", "decimal", "bool", "halffloat")


def _kind(dtype: Any) -> str | None:
    """"text", "numeric" or None for a polars / pyarrow dtype or its name."""
    name = str(dtype).lower()
    if name.startswith(_TEXT_TYPES):
        return "text"
    if name.startswith(_NUMERIC_TYPES):
        return "numeric"
    return None


def _columns(columns: Mapping[str, Any] | Any) -> dict[str, Any]:
    if hasattr(columns, "items"):
        return dict(columns.items())
    raise TypeError("pass the columns as a mapping name -> dtype (e.g. a polars schema)")


def mapped_spec(
    user_columns: Mapping[str, Any],
    class_columns: Mapping[str, Any],
    example_columns: Mapping[str, Any],
    *,
    include_ids: bool = False,
    affinity: bool = False,
    cooccurrence: bool = True,
) -> FeatureSpec:
    """The spec of a mapped dataset, from the columns (name -> dtype) of its gold
    user_features_daily, class_features_daily and training_examples (contract section 4).
    affinity: the gold user_attribute_affinity exists: one lookup per categorical item
    attribute (`ATTR_AFFINITY_PREFIX`). cooccurrence: the class's similarity to the user's
    recent items (`ml.cooccurrence`), where user_features_daily has them.

    What a table lacks is simply not a feature: no ctx_* columns -> only the time of the event
    as context; no side tables -> no user_attr_* / item_attr_* features; a single implicit
    platform "all" stays as a constant. Text columns are sparse, numeric ones dense.
    Context (dropped by `with_context(spec, False)`): platform, hour_of_day, day_of_week,
    is_weekend, every ctx_* and hour_gap_usual (the hour's distance to the user's usual hour,
    derived from hour_of_day).
    """
    users, classes, examples = _columns(user_columns), _columns(class_columns), _columns(example_columns)

    def by_prefix(cols: dict, prefix: str, kind: str) -> list[str]:
        return [c for c, t in cols.items() if c.startswith(prefix) and _kind(t) == kind]

    sparse: list[str] = []
    dense: list[str] = []
    log1p: set[str] = set()
    fill_null: dict[str, float] = {}
    if include_ids:
        sparse += [c for c in ("user_id", "class_id") if c in examples]

    # user side
    sparse += [c for c in ("last_platform",) if c in users]
    sparse += by_prefix(users, LAST_CTX_PREFIX, "text") + by_prefix(users, USER_ATTR_PREFIX, "text")
    counts = [c for c in ("events_total", "events_7d", "events_28d", "music_likes_28d") if c in users]
    dense += counts
    log1p |= set(counts)
    fill_null |= {c: 0.0 for c in counts}  # a cold-start user has done nothing yet
    if "complete_rate_28d" in users:
        dense.append("complete_rate_28d")
    if "days_since_first_seen" in users:
        dense += ["days_since_first_seen", "user_is_cold"]
        log1p.add("days_since_first_seen")
        fill_null["days_since_first_seen"] = 0.0
    if "days_since_last_event" in users:
        dense += ["days_since_last_event", "never_active"]
        log1p.add("days_since_last_event")
        fill_null["days_since_last_event"] = NEVER_DAYS
    dense += by_prefix(users, LAST_CTX_PREFIX, "numeric") + by_prefix(users, USER_ATTR_PREFIX, "numeric")
    # recent state: what the user took last, and its attributes
    if include_ids:
        sparse += [c for c in RECENT_ITEMS if c in users]
    sparse += by_prefix(users, LAST_ITEM_ATTR_PREFIX, "text")
    dense += by_prefix(users, LAST_ITEM_ATTR_PREFIX, "numeric")

    # class (item) side
    sparse += by_prefix(classes, ITEM_ATTR_PREFIX, "text")
    class_counts = [CLASS_PREFIX + c for c in ("events_1d", "events_7d", "events_28d", "events_total")
                    if c in classes]
    dense += class_counts
    log1p |= set(class_counts)
    fill_null |= {c: 0.0 for c in class_counts}  # an item first seen on the event day
    dense += [CLASS_PREFIX + c for c in ("complete_rate", "music_like_rate") if c in classes]
    if "release_date" in classes:
        dense.append("class_age_days")
        log1p.add("class_age_days")
    if "events_total" in classes:
        dense.append("class_is_new")
    dense += by_prefix(classes, ITEM_ATTR_PREFIX, "numeric")

    # the pair: the user's affinity to the item's value of each categorical attribute
    if affinity:
        lookups = [ATTR_AFFINITY_PREFIX + c for c in by_prefix(classes, ITEM_ATTR_PREFIX, "text")]
        dense += lookups
        fill_null |= {c: 0.0 for c in lookups}  # no take with that value in the window
    # ... and to the items the user took last (a collaborative signal)
    recent = [c for c in RECENT_ITEMS if c in users] if cooccurrence else []
    if recent:
        dense.append(COOCCURRENCE)
        fill_null[COOCCURRENCE] = 0.0  # no recent item: nothing to be similar to

    # context of the event
    sparse += [c for c in ("platform", "hour_of_day", "day_of_week") if c in examples]
    sparse += by_prefix(examples, CTX_PREFIX, "text")
    dense += [c for c in ("is_weekend",) if c in examples]
    if "usual_hour" in users and "hour_of_day" in examples:
        dense.append("hour_gap_usual")
    dense += by_prefix(examples, CTX_PREFIX, "numeric")
    context = {"platform", "hour_of_day", "day_of_week", "is_weekend", "hour_gap_usual",
               *(c for c in examples if c.startswith(CTX_PREFIX))}
    if not sparse:
        raise FeatureError("a mapped spec needs at least one categorical feature: the gold tables "
                           "have neither platform nor last_platform")
    return FeatureSpec(sparse=sparse, dense=dense, context_features=context, log1p=log1p,
                       fill_null=fill_null, dataset="mapped", recent_items=recent)


# ---------------------------------------------------------------------------------------------
# Derived columns


def _if_present(frame: pl.DataFrame, name: str, expr: pl.Expr, needs: tuple[str, ...]) -> list:
    if name in frame.columns or not all(c in frame.columns for c in needs):
        return []
    return [expr.alias(name)]


def prepare(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the derived columns whose inputs are present (existing columns are kept as they are)."""
    import polars as pl

    cols = set(frame.columns)
    exprs: list[pl.Expr] = []
    f = frame

    exprs += _if_present(f, "duration_bucket", pl.col("duration_min").cast(pl.Int64).cast(pl.Utf8),
                         ("duration_min",))
    share_cols = [d for d in DISCIPLINES if f"share_{d}" in cols]
    if share_cols and "discipline" in cols and "user_share_of_class_discipline" not in cols:
        e = pl.lit(None, dtype=pl.Float64)
        for d in share_cols:
            e = pl.when(pl.col("discipline") == d).then(pl.col(f"share_{d}").cast(pl.Float64)).otherwise(e)
        exprs.append(e.alias("user_share_of_class_discipline"))

    def same(a: str, b: str) -> pl.Expr:
        return (pl.col(a) == pl.col(b)).fill_null(False).cast(pl.Float64)

    exprs += _if_present(f, "is_top_instructor", same("top_instructor_id", "instructor_id"),
                         ("top_instructor_id", "instructor_id"))
    exprs += _if_present(f, "is_last_instructor", same("last_instructor_id", "instructor_id"),
                         ("last_instructor_id", "instructor_id"))
    exprs += _if_present(f, "is_top_discipline", same("top_discipline", "discipline"),
                         ("top_discipline", "discipline"))
    # mapped: cold start = no user_features_daily row (days_since_first_seen is never null there)
    if "days_since_signup" not in cols:
        exprs += _if_present(f, "user_is_cold", pl.col("days_since_first_seen").is_null().cast(pl.Float64),
                             ("days_since_first_seen",))
    exprs += _if_present(f, "never_active", pl.col("days_since_last_event").is_null().cast(pl.Float64),
                         ("days_since_last_event",))
    if CLASS_PREFIX + "workouts_total" not in cols:
        exprs += _if_present(f, "class_is_new",
                             pl.col(CLASS_PREFIX + "events_total").is_null().cast(pl.Float64),
                             (CLASS_PREFIX + "events_total",))
    exprs += _if_present(f, "never_worked_out",
                         pl.col("days_since_last_workout").is_null().cast(pl.Float64),
                         ("days_since_last_workout",))
    # cold start: no user_features_daily row at feature_date (days_since_signup is never null there)
    exprs += _if_present(f, "user_is_cold", pl.col("days_since_signup").is_null().cast(pl.Float64),
                         ("days_since_signup",))
    exprs += _if_present(f, "class_is_new",
                         pl.col(CLASS_PREFIX + "workouts_total").is_null().cast(pl.Float64),
                         (CLASS_PREFIX + "workouts_total",))
    # age at the event from the static release date: defined even for a class released that day
    exprs += _if_present(f, "class_age_days",
                         (pl.col("event_date") - pl.col("release_date")).dt.total_days().cast(pl.Float64),
                         ("event_date", "release_date"))
    exprs += _if_present(f, "has_prev", pl.col("prev_discipline").is_not_null().cast(pl.Float64),
                         ("prev_discipline",))
    usual = [p for p in PLATFORMS if f"usual_hour_{p}" in cols]
    if usual and {"platform", "hour_of_day"} <= cols and "hour_gap_usual" not in cols:
        u = pl.lit(None, dtype=pl.Float64)
        for p in usual:
            u = pl.when(pl.col("platform") == p).then(pl.col(f"usual_hour_{p}").cast(pl.Float64)).otherwise(u)
        diff = (pl.col("hour_of_day").cast(pl.Float64) - u).abs() % 24.0
        # circular distance in hours, 0..12; null (imputed) until the user worked out there
        exprs.append(pl.min_horizontal(diff, 24.0 - diff).alias("hour_gap_usual"))
    elif {"usual_hour", "hour_of_day"} <= cols and "hour_gap_usual" not in cols:
        # mapped: one usual hour per user (over every platform)
        diff = (pl.col("hour_of_day").cast(pl.Float64) - pl.col("usual_hour").cast(pl.Float64)).abs() % 24.0
        exprs.append(pl.min_horizontal(diff, 24.0 - diff).alias("hour_gap_usual"))
    # no affinity table joined (older lakehouse, or a frame built by hand): no affinity
    exprs += [pl.lit(None, pl.Float64).alias(name) for name, (kind, _, _) in PAIR_FEATURES.items()
              if kind == "lookup" and name not in cols]
    return frame.with_columns(exprs) if exprs else frame


# ---------------------------------------------------------------------------------------------
# Encoders


def _row_key(frame: pl.DataFrame, mask: pl.Series) -> str:
    """One row the mask holds, named by its key: the smallest, so the message does not depend
    on the order a multi-threaded read returned the rows in."""
    for key in ("example_id", "workout_id"):
        if key in frame.columns:
            return f"{key}={frame[key].filter(mask).min()!r}"
    return f"row {int(mask.arg_true()[0])}"


def _check_not_empty(frame: pl.DataFrame, table: str | None) -> None:
    if frame.height == 0:
        where = f" from {table}" if table else ""
        raise FeatureError(f"no rows{where}: cannot build features from an empty frame")


def _check_columns(frame: pl.DataFrame, names: list[str], table: str | None) -> None:
    missing = [c for c in names if c not in frame.columns]
    if missing:
        where = f" in {table}" if table else ""
        raise FeatureError(f"missing feature columns{where}: {missing}")


def _dense_checked(frame: pl.DataFrame, spec: FeatureSpec, table: str | None) -> pl.DataFrame:
    """The spec's dense columns as Float64 with nulls filled (`fill_null`), in one select (no
    per-column passes: this runs on every chunk training reads). A column that is not numeric
    or holds NaN / infinite values is named."""
    import polars as pl

    try:
        values = frame.select(_dense_inputs(spec))
    except Exception:  # noqa: BLE001 - find and name the column, whatever polars raised
        for name in spec.dense:
            try:
                frame[name].cast(pl.Float64)
            except Exception as e:  # noqa: BLE001
                raise FeatureError(f"dense column {name!r} is not numeric ({frame[name].dtype})") from e
        raise
    counts = (values.select((pl.all().is_nan() | pl.all().is_infinite()).fill_null(False).sum()).row(0)
              if values.width else ())
    for name, count in zip(spec.dense, counts):
        if count:
            bad = (values[name].is_nan() | values[name].is_infinite()).fill_null(False)
            where = f" of {table}" if table else ""
            raise FeatureError(f"dense column {name!r}{where} holds NaN or infinite values "
                               f"({int(count)} rows, e.g. {_row_key(frame, bad)})")
    return values


def _dense_inputs(spec: FeatureSpec) -> list:
    """The spec's dense columns as Float64 with nulls filled (`fill_null`)."""
    import polars as pl

    exprs = []
    for name in spec.dense:
        e = pl.col(name).cast(pl.Float64)
        exprs.append(e.fill_null(spec.fill_null[name]) if name in spec.fill_null else e)
    return exprs


def _dense_exprs(spec: FeatureSpec, mean: Mapping[str, float] | None = None,
                 std: Mapping[str, float] | None = None, inputs: list | None = None) -> list:
    """Over `_dense_checked`'s columns (or over `inputs`, e.g. `_dense_inputs`: the whole chain
    in one select): log1p where the spec says; with mean/std also normalized, the remaining
    nulls at 0 (the training mean), as Float32. A non-finite input stays non-finite through
    log1p's clip (x - x), so a check of the output finds it."""
    import polars as pl

    exprs = []
    for name, e in zip(spec.dense, inputs or [pl.col(name) for name in spec.dense]):
        if name in spec.log1p:
            e = e.clip(lower_bound=0.0).log1p() + (e - e)
        if mean is not None and std is not None:
            e = ((e - mean[name]) / std[name]).fill_null(0.0).cast(pl.Float32)
        exprs.append(e)
    return exprs


def _dense_raw(frame: pl.DataFrame, spec: FeatureSpec, table: str | None) -> np.ndarray:
    """[n, n_dense] float64 after null fill and transform, NaN where still null (to impute)."""
    return _dense_checked(frame, spec, table).select(_dense_exprs(spec)).to_numpy()


@dataclass
class Encoders:
    """Fitted vocabularies (sparse) and normalization statistics (dense) for one FeatureSpec."""

    spec: FeatureSpec
    vocab: dict[str, list[str]]  # per sparse column, most frequent first; id = position + 1
    mean: dict[str, float]
    std: dict[str, float]
    # the items' neighbours as of the last training day, when the spec has COOCCURRENCE
    # (set by the training job, which computes them with the training frame's column)
    neighbours: Neighbours | None = None

    # -- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        frame: pl.DataFrame,
        spec: FeatureSpec,
        *,
        max_vocab: int = 10_000,
        min_count: int = 1,
        table: str | None = None,
    ) -> "Encoders":
        """Fit on the training frame (the joined frame of `read_examples`, collected)."""
        import polars as pl

        _check_not_empty(frame, table)
        frame = prepare(frame)
        if COOCCURRENCE in spec.dense and COOCCURRENCE not in frame.columns:
            # a frame without the training join (`ml.examples.with_cooccurrence`): no signal
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias(COOCCURRENCE))
        _check_columns(frame, [*spec.sparse, *spec.dense], table)
        vocab: dict[str, list[str]] = {}
        bags: dict[str, int] = {}
        for name in spec.sparse:
            values = frame.select(pl.col(name).cast(pl.Utf8).str.split(MULTI_VALUE_SEPARATOR).alias("v"))
            widest = values.select(pl.col("v").list.len().max()).item()
            if widest is not None and widest > 1:  # a multi-valued attribute: a bag of its values
                bags[name] = min(int(widest), MAX_BAG)
            counts = (
                values.explode("v")
                .drop_nulls()
                .group_by("v")
                .len()
                .filter(pl.col("len") >= min_count)
                .sort(["len", "v"], descending=[True, False])
                .head(max_vocab)
            )
            vocab[name] = counts["v"].to_list()
        raw = _dense_raw(frame, spec, table)
        mean: dict[str, float] = {}
        std: dict[str, float] = {}
        for j, name in enumerate(spec.dense):
            col = raw[:, j]
            col = col[~np.isnan(col)]
            m = float(col.mean()) if col.size else 0.0
            sd = float(col.std()) if col.size else 0.0
            mean[name] = m
            std[name] = sd if sd > 1e-12 else 1.0
        if bags != spec.bags:
            spec = replace(spec, bags=bags)
        return cls(spec=spec, vocab=vocab, mean=mean, std=std)

    # -- applying --------------------------------------------------------------------------
    def cardinalities(self) -> list[int]:
        """Vocabulary size per sparse feature, in spec order, including the OOV id 0."""
        return [len(self.vocab[c]) + 1 for c in self.spec.sparse]

    def transform(self, frame: pl.DataFrame, *, table: str | None = None) -> Batch:
        """Encode a frame; labels are zeros where the frame has none (scoring candidates)."""
        import polars as pl

        _check_not_empty(frame, table)
        frame = self.with_cooccurrence(prepare(frame))
        spec = self.spec
        _check_columns(frame, [*spec.sparse, *spec.dense], table)
        n = frame.height

        dense_exprs, single_exprs = self._encoding
        # an integer column (hour, weekday) looks its ids up as integers: 0.4x the time of
        # casting it to strings for the Enum (the ids are the same: the vocabulary holds str(x))
        schema = frame.schema
        single_exprs = [self._integer_ids[name] if schema[name].is_integer() else e
                        for e in single_exprs for name in [e.meta.output_name()]]
        try:  # the whole chain in one select, checked once at the end (this runs on every chunk)
            dense = frame.select(dense_exprs).to_numpy(order="c")
        except Exception:
            _dense_checked(frame, spec, table)  # names the column that is not numeric
            raise
        if not np.isfinite(dense).all():
            _dense_checked(frame, spec, table)  # names the column that holds NaN or infinite values
            bad = [name for j, name in enumerate(spec.dense) if not np.isfinite(dense[:, j]).all()]
            raise FeatureError(f"dense columns {bad} overflow float32 once normalized")

        # every one-id feature in one select (a hash lookup per column, no join per feature)
        slots = spec.slots()
        singles = frame.select(single_exprs)
        if max(slots, default=1) == 1:
            sparse = singles.to_numpy(order="c") if singles.width else np.zeros((n, 0), np.int64)
        else:
            sparse = np.zeros((n, sum(slots)), dtype=np.int64)
            start = 0
            for name, width in zip(spec.sparse, slots):
                if width == 1:
                    sparse[:, start] = singles[name].to_numpy()
                else:
                    mapping = pl.DataFrame(
                        {"v": self.vocab[name],
                         "id": np.arange(1, len(self.vocab[name]) + 1, dtype=np.int64)},
                        schema={"v": pl.Utf8, "id": pl.Int64},
                    )
                    sparse[:, start:start + width] = self._bag_ids(frame[name], mapping, width)
                start += width

        labels = frame.select([
            (pl.col(name).cast(pl.Float32).fill_null(0.0) if name in frame.columns
             else pl.repeat(0.0, n, dtype=pl.Float32)).alias(name)
            for name in LABEL_COLUMNS
        ]).to_numpy(order="c")

        return Batch(
            dense=torch.from_numpy(dense),
            sparse=torch.from_numpy(sparse),
            labels=torch.from_numpy(labels),
        )

    @cached_property
    def _encoding(self) -> tuple[list, list]:
        """(the dense columns' expressions, cast to normalized, the one-id features' lookups),
        built once: building them per chunk was a sixth of the encoding's time."""
        import polars as pl

        spec = self.spec
        dense = _dense_exprs(spec, self.mean, self.std, inputs=_dense_inputs(spec))
        # id = position in the vocabulary + 1, 0 out of it: an Enum of the vocabulary gives the
        # position as its physical code (0.7x the time of a replace_strict lookup per column)
        singles = [
            (pl.col(name).cast(pl.Utf8).cast(pl.Enum(self.vocab[name]), strict=False)
             .to_physical().cast(pl.Int64) + 1).fill_null(0).alias(name)
            if self.vocab[name] else pl.repeat(0, pl.len(), dtype=pl.Int64).alias(name)
            for name, width in zip(spec.sparse, spec.slots()) if width == 1
        ]
        return dense, singles

    @cached_property
    def _integer_ids(self) -> dict[str, pl.Expr]:
        """Per one-id feature, its ids for an integer column: the vocabulary's entries that are
        integers written as `cast(pl.Utf8)` writes them (no other can equal one), 0 otherwise."""
        import polars as pl

        out = {}
        for name, width in zip(self.spec.sparse, self.spec.slots()):
            if width != 1:
                continue
            pairs = [(int(v), i) for i, v in enumerate(self.vocab[name], start=1)
                     if v.lstrip("-").isdigit() and str(int(v)) == v]
            out[name] = (pl.col(name).replace_strict([k for k, _ in pairs], [i for _, i in pairs], default=0,
                                                     return_dtype=pl.Int64).fill_null(0).alias(name))
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        # expressions: rebuilt where the encoders are unpickled
        state.pop("_encoding", None)
        state.pop("_integer_ids", None)
        return state

    def with_cooccurrence(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The frame with COOCCURRENCE from the carried neighbours, where the spec has it and
        the frame does not (a training frame brings its own, point in time)."""
        import polars as pl

        if COOCCURRENCE not in self.spec.dense or COOCCURRENCE in frame.columns:
            return frame
        neighbours = self.neighbours or Neighbours.empty()
        classes = frame["class_id"].cast(pl.Utf8).to_list() if "class_id" in frame.columns \
            else [None] * frame.height
        recent = [frame[c].cast(pl.Utf8).to_list() for c in self.spec.recent_items if c in frame.columns]
        return frame.with_columns(pl.Series(COOCCURRENCE, neighbours.score(classes, recent),
                                            dtype=pl.Float64, nan_to_null=True))

    @staticmethod
    def _bag_ids(values: pl.Series, mapping: pl.DataFrame, width: int) -> np.ndarray:
        """[n, width] ids of each row's values (at most `width`), -1 in unused slots; a row
        without a value holds the out-of-vocabulary id 0 in its first slot, as a single one."""
        import polars as pl

        tokens = (pl.DataFrame({"v": values.cast(pl.Utf8).str.split(MULTI_VALUE_SEPARATOR)})
                  .with_row_index("row").explode("v")
                  .with_columns(pl.int_range(pl.len()).over("row").alias("slot"))
                  .filter(pl.col("slot") < width)
                  .join(mapping, on="v", how="left", maintain_order="left"))
        out = np.full((values.len(), width), -1, dtype=np.int64)
        out[tokens["row"].to_numpy(), tokens["slot"].to_numpy()] = tokens["id"].fill_null(0).to_numpy()
        return out

    # -- persistence -----------------------------------------------------------------------
    def to_json(self) -> str:
        d = {"version": 1, "spec": self.spec.to_dict(), "vocab": self.vocab,
             "mean": self.mean, "std": self.std}
        if self.neighbours is not None:
            d["neighbours"] = self.neighbours.to_dict()
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Encoders":
        d = json.loads(text)
        enc = cls(
            spec=FeatureSpec.from_dict(d["spec"]),
            vocab={k: list(v) for k, v in d["vocab"].items()},
            mean={k: float(v) for k, v in d["mean"].items()},
            std={k: float(v) for k, v in d["std"].items()},
            neighbours=Neighbours.from_dict(d["neighbours"]) if "neighbours" in d else None,
        )
        for name in enc.spec.dense:
            if not (math.isfinite(enc.mean[name]) and math.isfinite(enc.std[name])):
                raise FeatureError(f"saved statistics of {name!r} are not finite")
        return enc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Encoders":
        return cls.from_json(Path(path).read_text())
