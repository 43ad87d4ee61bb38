"""The mapping file of a "bring your own data" dataset: which columns of which files are the
users, items, timestamps, platform, context and event kinds of an interaction log.

One YAML file describes the dataset (see examples/listening/mapping.yaml, the documented
example). :func:`lakehouse.mapped.mapping_file.load_mapping` reads and validates it; every error
names the mapping file, the field path (``interactions.timestamp.unit``) and what was expected, so
a user can fix the file without reading this code. Nothing here touches the data: the files are
read and checked by :mod:`lakehouse.mapped.importer`.

This module holds what a parsed mapping is: its dataclasses, the constants dbt and ML read
(heads, event types, bronze column prefixes) and the keys a mapping file may hold (FIELDS).
"""

import os
import re
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("csv", "parquet", "jsonl")
EPOCH_UNITS = ("s", "ms", "us", "ns")
TIMESTAMP_UNITS = (*EPOCH_UNITS, "iso")
HEADS = ("take", "complete", "music_like")
# event_type values written to bronze
EVENT_TYPES = ("take", "complete", "music_like", "other", "below_threshold")
IMPLICIT_PLATFORM = "all"

# Bronze column prefixes for the declared columns (kept in one place for dbt and ML).
CTX_PREFIX = "ctx_"
# A multi-valued attribute's values in bronze (and gold): joined by the ASCII unit separator,
# which no value holds; dbt splits on it (mapped_user_attribute_affinity), so does `ml`.
MULTI_VALUE_SEPARATOR = "\x1f"
LIST_UNITS = ("day", "window")  # EvaluationProtocol.list_unit
USER_ATTR_PREFIX = "user_attr_"
ITEM_ATTR_PREFIX = "item_attr_"


class MappingError(ValueError):
    """The mapping file is missing, unreadable or does not describe a dataset."""


@dataclass(frozen=True)
class TimestampSpec:
    column: str
    unit: str  # s | ms | us | ns | iso | a strptime format (contains %)
    timezone: str = "UTC"  # applied to timestamps without an offset

    @property
    def is_epoch(self) -> bool:
        return self.unit in EPOCH_UNITS

    @property
    def is_iso(self) -> bool:
        return self.unit == "iso"

    @property
    def is_format(self) -> bool:
        return "%" in self.unit


@dataclass(frozen=True)
class ColumnGroup:
    """Declared attribute columns: strings (categorical) and numbers (numeric)."""

    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()

    def kinds(self) -> dict[str, str]:
        return {**{c: "categorical" for c in self.categorical}, **{c: "numeric" for c in self.numeric}}


@dataclass(frozen=True)
class EventSpec:
    column: str
    take: tuple[str, ...]
    complete: tuple[str, ...] = ()
    music_like: tuple[str, ...] = ()

    def value_types(self) -> dict[str, str]:
        """Source value -> event_type (values not listed become "other")."""
        return {v: head for head in HEADS for v in getattr(self, head)}


@dataclass(frozen=True)
class RatingSpec:
    column: str
    positive_threshold: float


@dataclass(frozen=True)
class InteractionsMapping:
    path: str
    format: str | None  # None: from each file's suffix
    user: str
    item: str
    timestamp: TimestampSpec
    platform: str | None = None
    context: ColumnGroup = field(default_factory=ColumnGroup)
    event: EventSpec | None = None
    rating: RatingSpec | None = None
    delimiter: str = ","  # CSV only

    def source_columns(self) -> list[str]:
        """Every column the import reads from the interaction files."""
        cols = [self.user, self.item, self.timestamp.column]
        cols += [self.platform] if self.platform else []
        cols += [*self.context.categorical, *self.context.numeric]
        cols += [self.event.column] if self.event else []
        cols += [self.rating.column] if self.rating else []
        return cols


@dataclass(frozen=True)
class SideTable:
    path: str
    format: str | None
    key: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    delimiter: str = ","
    # categorical columns holding several values (genres "Action|Comedy") -> their separator;
    # bronze keeps the values joined by MULTI_VALUE_SEPARATOR
    multi_valued: tuple[tuple[str, str], ...] = ()

    @property
    def attributes(self) -> ColumnGroup:
        return ColumnGroup(self.categorical, self.numeric)

    def source_columns(self) -> list[str]:
        return [self.key, *self.categorical, *self.numeric]


@dataclass(frozen=True)
class EvaluationProtocol:
    """How the held-out lists of this data are judged (the mapping's `evaluation` section)."""

    # a list's candidates leave out what the user took in the last N days; None: ever (data
    # without repeat consumption, such as ratings: a movie rated once is never relevant again)
    exclude_seen_days: int | None = 14
    min_lists: int = 100  # fewer held-out lists: the evaluation says it cannot conclude
    # the held-out window is the fewest latest days holding at least this many lists (sparse
    # logs: a fixed count of days holds too few); None: the training config's valid_days
    holdout_lists: int | None = None
    # the unit of a list: "day" (a user's takes on one platform and day: a daily batch list) or
    # "window" (a user's takes on one platform over the whole held-out window, ranked once from
    # the state before it: sparse logs, where a user is seen on few days)
    list_unit: str = "day"

    def eval_settings(self) -> dict:
        """The `ml.lists.EvalSettings` fields this protocol sets."""
        return {"exclude_days": self.exclude_seen_days, "min_lists": self.min_lists,
                "list_unit": self.list_unit}


@dataclass(frozen=True)
class DatasetMapping:
    name: str
    source: str  # absolute local folder or s3://bucket/prefix, variables expanded
    interactions: InteractionsMapping
    users: SideTable | None = None
    items: SideTable | None = None
    mapping_path: str | None = None
    # the first daily partition (YYYY-MM-DD); None: the project's default first day
    first_day: str | None = None
    evaluation: EvaluationProtocol = field(default_factory=EvaluationProtocol)

    # ------------------------------------------------ derived facts used by dbt, ML, assets

    @property
    def has_platform(self) -> bool:
        return self.interactions.platform is not None

    @property
    def has_rating(self) -> bool:
        return self.interactions.rating is not None

    @property
    def heads_present(self) -> tuple[str, ...]:
        """Model heads that get positive labels from this data: take always; complete and
        music_like only when the mapping names event values for them."""
        ev = self.interactions.event
        return ("take",) + tuple(h for h in HEADS[1:] if ev is not None and getattr(ev, h))

    def context_columns(self) -> dict[str, str]:
        """Bronze/gold context columns -> "categorical" | "numeric", e.g. {"ctx_network": ...}."""
        return _prefixed(CTX_PREFIX, self.interactions.context)

    def user_columns(self) -> dict[str, str]:
        """Bronze user attribute columns, e.g. {"user_attr_country": "categorical"}."""
        return _prefixed(USER_ATTR_PREFIX, self.users.attributes) if self.users else {}

    def item_columns(self) -> dict[str, str]:
        return _prefixed(ITEM_ATTR_PREFIX, self.items.attributes) if self.items else {}

    def uri(self, path: str) -> str:
        """Where a table's `path` points: under `source` unless absolute or s3://."""
        if path.startswith("s3://") or os.path.isabs(path):
            return path.rstrip("/")
        return f"{self.source.rstrip('/')}/{path.strip('/')}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (logs, run metadata): the parsed mapping plus derived columns."""
        it = self.interactions
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "mapping_path": self.mapping_path,
            "first_day": self.first_day,
            "evaluation": {"exclude_seen": "all" if self.evaluation.exclude_seen_days is None
                           else self.evaluation.exclude_seen_days, "min_lists": self.evaluation.min_lists,
                           "list_unit": self.evaluation.list_unit,
                           **({"holdout_lists": self.evaluation.holdout_lists}
                              if self.evaluation.holdout_lists is not None else {})},
            "interactions": {
                "path": it.path, "format": it.format, "delimiter": it.delimiter, "user": it.user,
                "item": it.item,
                "timestamp": {"column": it.timestamp.column, "unit": it.timestamp.unit,
                              "timezone": it.timestamp.timezone},
                "platform": it.platform,
                "context": {"categorical": list(it.context.categorical), "numeric": list(it.context.numeric)},
                "event": None if it.event is None else {
                    "column": it.event.column, **{h: list(getattr(it.event, h)) for h in HEADS}},
                "rating": None if it.rating is None else {
                    "column": it.rating.column, "positive_threshold": it.rating.positive_threshold},
            },
            "heads_present": list(self.heads_present),
            "context_columns": self.context_columns(),
            "user_columns": self.user_columns(),
            "item_columns": self.item_columns(),
        }
        for side in ("users", "items"):
            t: SideTable | None = getattr(self, side)
            out[side] = None if t is None else {
                "path": t.path, "format": t.format, "delimiter": t.delimiter, "key": t.key,
                "categorical": list(t.categorical), "numeric": list(t.numeric),
                **({"multi_valued": dict(t.multi_valued)} if t.multi_valued else {})}
        return out

    def summary(self) -> str:
        it = self.interactions
        kind = ("ratings >= %g" % it.rating.positive_threshold if it.rating
                else f"events from {it.event.column!r}" if it.event else "every row a take")
        return (f"dataset {self.name!r} from {self.source}: {it.path} ({kind}; "
                f"platform {it.platform or IMPLICIT_PLATFORM!r}; context {sorted(self.context_columns()) or 'none'}; "
                f"heads {list(self.heads_present)}; users table {'yes' if self.users else 'no'}; "
                f"items table {'yes' if self.items else 'no'})")


def bronze_name(column: str) -> str:
    """A source column's name in bronze (after its prefix): lower-cased, because DuckDB/dbt
    identifiers are case-insensitive and Delta's are not, and anything but letters, digits and
    '_' made '_' (MovieLens's "age:token" -> "age_token")."""
    return re.sub(r"[^0-9a-z_]+", "_", column.lower()).strip("_")


def _prefixed(prefix: str, group: ColumnGroup) -> dict[str, str]:
    return {prefix + bronze_name(c): kind for c, kind in group.kinds().items()}


# Every key a mapping may hold, per section: (required, optional). The validator accepts exactly
# these; the README's "Bring your own data" table and examples/listening/mapping.yaml document
# each of them (tests/lakehouse/test_mapping.py holds the three together).
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "": (("name", "source", "interactions"), ("users", "items", "first_day", "evaluation")),
    "interactions": (("path", "user", "item", "timestamp"),
                     ("format", "platform", "context", "event", "rating", "delimiter")),
    "interactions.timestamp": (("column", "unit"), ("timezone",)),
    "interactions.context": ((), ("categorical", "numeric")),
    "interactions.event": (("column", "take"), ("complete", "music_like")),
    "interactions.rating": (("column", "positive_threshold"), ()),
    "users": (("path", "key"), ("format", "categorical", "numeric", "delimiter", "multi_valued")),
    "items": (("path", "key"), ("format", "categorical", "numeric", "delimiter", "multi_valued")),
    "evaluation": ((), ("exclude_seen", "min_lists", "holdout_lists", "list_unit")),
}


__all__ = [
    "CTX_PREFIX", "LIST_UNITS", "MULTI_VALUE_SEPARATOR", "ColumnGroup", "DatasetMapping", "EVENT_TYPES", "EvaluationProtocol", "EventSpec", "FIELDS", "FORMATS",
    "HEADS", "IMPLICIT_PLATFORM", "ITEM_ATTR_PREFIX", "InteractionsMapping", "MappingError",
    "RatingSpec", "SideTable", "TIMESTAMP_UNITS", "TimestampSpec", "USER_ATTR_PREFIX", "bronze_name",
]
