"""The mapping file of a "bring your own data" dataset: which columns of which files are the
users, items, timestamps, platform, context and event kinds of an interaction log.

One YAML file describes the dataset (see examples/listening/mapping.yaml, the documented
example). :func:`load_mapping` reads and validates it; every error names the mapping file, the
field path (``interactions.timestamp.unit``) and what was expected, so a user can fix the file
without reading this code. Nothing here touches the data: the files are read and checked by
:mod:`lakehouse.mapped_import`.
"""

import datetime as dt
import difflib
import os
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

FORMATS = ("csv", "parquet", "jsonl")
EPOCH_UNITS = ("s", "ms", "us", "ns")
TIMESTAMP_UNITS = (*EPOCH_UNITS, "iso")
HEADS = ("take", "complete", "music_like")
# event_type values written to bronze
EVENT_TYPES = ("take", "complete", "music_like", "other", "below_threshold")
IMPLICIT_PLATFORM = "all"

# Bronze column prefixes for the declared columns (kept in one place for dbt and ML).
CTX_PREFIX = "ctx_"
USER_ATTR_PREFIX = "user_attr_"
ITEM_ATTR_PREFIX = "item_attr_"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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

    @property
    def attributes(self) -> ColumnGroup:
        return ColumnGroup(self.categorical, self.numeric)

    def source_columns(self) -> list[str]:
        return [self.key, *self.categorical, *self.numeric]


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
                "categorical": list(t.categorical), "numeric": list(t.numeric)}
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


# ---------------------------------------------------------------- loading and validation

def load_mapping(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> DatasetMapping:
    """Read and validate a mapping YAML; raise :class:`MappingError` naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise MappingError(f"mapping file not found: {p} (LAKEHOUSE_MAPPING must name a YAML file)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MappingError(f"{p}: not valid YAML ({' '.join(str(exc).split())})") from exc
    return parse_mapping(data, origin=str(p), environ=environ, base_dir=p.resolve().parent,
                         mapping_path=str(p.resolve()))


def parse_mapping(
    data: Any,
    *,
    origin: str,
    environ: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike | None = None,
    mapping_path: str | None = None,
) -> DatasetMapping:
    """Validate a mapping already loaded as a dict. `origin` names it in errors; a relative
    `source` is resolved against `base_dir` (default: the current folder)."""
    v = _Validator(origin)
    top = v.mapping(data, "", required=("name", "source", "interactions"),
                    optional=("users", "items", "first_day"))
    name = v.string(top["name"], "name")
    if not _NAME.match(name):
        v.fail("name", f"{name!r} is not a simple label; expected letters, digits, '_', '-' or '.'")
    source = _resolve_source(v, v.string(top["source"], "source"), environ, base_dir)
    first_day = None
    if top.get("first_day") is not None:
        first_day = str(top["first_day"])  # YAML reads an unquoted date as a date
        try:
            dt.date.fromisoformat(first_day)
        except ValueError:
            v.fail("first_day", f"{first_day!r} is not a date; expected YYYY-MM-DD (the first "
                                "day of your data, where the daily partitions start)")

    it = v.mapping(top["interactions"], "interactions",
                   required=("path", "user", "item", "timestamp"),
                   optional=("format", "platform", "context", "event", "rating", "delimiter"))
    ts = v.mapping(it["timestamp"], "interactions.timestamp", required=("column", "unit"),
                   optional=("timezone",))
    unit = v.string(ts["unit"], "interactions.timestamp.unit")
    if unit not in TIMESTAMP_UNITS and "%" not in unit:
        v.fail("interactions.timestamp.unit",
               f"{unit!r} is not a timestamp unit; expected s|ms|us|ns (epoch numbers), iso "
               f"(ISO-8601 text) or a strptime format containing % such as \"%d/%m/%Y %H:%M\"")
    timezone = v.string(ts.get("timezone", "UTC"), "interactions.timestamp.timezone")
    _check_timezone(v, timezone, "interactions.timestamp.timezone")
    timestamp = TimestampSpec(column=v.column(ts["column"], "interactions.timestamp.column"),
                              unit=unit, timezone=timezone)

    context = ColumnGroup()
    if it.get("context") is not None:
        ctx = v.mapping(it["context"], "interactions.context", optional=("categorical", "numeric"))
        context = ColumnGroup(v.columns(ctx.get("categorical"), "interactions.context.categorical"),
                              v.columns(ctx.get("numeric"), "interactions.context.numeric"))

    if it.get("event") is not None and it.get("rating") is not None:
        v.fail("interactions", "`event` and `rating` given together; a dataset is either an event "
                               "log (event) or explicit ratings (rating), not both")
    event = None
    if it.get("event") is not None:
        ev = v.mapping(it["event"], "interactions.event", required=("column", "take"),
                       optional=("complete", "music_like"))
        values = {h: v.values(ev.get(h), f"interactions.event.{h}") for h in HEADS}
        if not values["take"]:
            v.fail("interactions.event.take", "empty; list the event value(s) that mean a positive "
                                              "interaction, e.g. [play]")
        seen: dict[str, str] = {}
        for head in HEADS:
            for value in values[head]:
                if value in seen:
                    v.fail(f"interactions.event.{head}",
                           f"value {value!r} is also listed under {seen[value]}; each event value "
                           f"belongs to one head")
                seen[value] = head
        event = EventSpec(column=v.column(ev["column"], "interactions.event.column"), **values)

    rating = None
    if it.get("rating") is not None:
        rt = v.mapping(it["rating"], "interactions.rating", required=("column", "positive_threshold"))
        rating = RatingSpec(column=v.column(rt["column"], "interactions.rating.column"),
                            positive_threshold=v.number(rt["positive_threshold"],
                                                        "interactions.rating.positive_threshold"))

    platform = None
    if it.get("platform") is not None:
        platform = v.column(it["platform"], "interactions.platform")
    interactions = InteractionsMapping(
        path=v.path(it["path"], "interactions.path"),
        format=v.format(it.get("format"), "interactions.format"),
        user=v.column(it["user"], "interactions.user"),
        item=v.column(it["item"], "interactions.item"),
        timestamp=timestamp,
        platform=platform,
        context=context,
        event=event,
        rating=rating,
        delimiter=v.delimiter(it.get("delimiter", ","), "interactions.delimiter"),
    )
    v.distinct("interactions", [
        ("interactions.user", interactions.user),
        ("interactions.item", interactions.item),
        ("interactions.timestamp.column", timestamp.column),
        *([("interactions.platform", platform)] if platform else []),
        *[(f"interactions.context.categorical[{i}]", c) for i, c in enumerate(context.categorical)],
        *[(f"interactions.context.numeric[{i}]", c) for i, c in enumerate(context.numeric)],
        *([("interactions.event.column", event.column)] if event else []),
        *([("interactions.rating.column", rating.column)] if rating else []),
    ])

    sides = {}
    for side in ("users", "items"):
        if top.get(side) is None:
            sides[side] = None
            continue
        t = v.mapping(top[side], side, required=("path", "key"),
                      optional=("format", "categorical", "numeric", "delimiter"))
        table = SideTable(path=v.path(t["path"], f"{side}.path"),
                          format=v.format(t.get("format"), f"{side}.format"),
                          key=v.column(t["key"], f"{side}.key"),
                          categorical=v.columns(t.get("categorical"), f"{side}.categorical"),
                          numeric=v.columns(t.get("numeric"), f"{side}.numeric"),
                          delimiter=v.delimiter(t.get("delimiter", ","), f"{side}.delimiter"))
        v.distinct(side, [(f"{side}.key", table.key),
                          *[(f"{side}.categorical[{i}]", c) for i, c in enumerate(table.categorical)],
                          *[(f"{side}.numeric[{i}]", c) for i, c in enumerate(table.numeric)]])
        sides[side] = table

    return DatasetMapping(name=name, source=source, interactions=interactions, users=sides["users"],
                          items=sides["items"], mapping_path=mapping_path, first_day=first_day)


def _expand(v: "_Validator", text: str, environ: Mapping[str, str]) -> str:
    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        value = environ.get(var)
        if value:
            return value
        if default is not None:
            return default
        v.fail("source", f"${{{var}}} is not set (in {text!r}); set the environment variable "
                         f"or write ${{{var}:-default}}")
        raise AssertionError("unreachable")

    if "$" in _VAR.sub("", text):
        v.fail("source", f"{text!r}: unsupported variable syntax; use ${{VAR}} or ${{VAR:-default}}")
    return _VAR.sub(sub, text)


def _resolve_source(v: "_Validator", raw: str, environ: Mapping[str, str] | None,
                    base_dir: str | os.PathLike | None) -> str:
    env = os.environ if environ is None else environ
    text = _expand(v, raw, env).strip()
    if not text:
        v.fail("source", "empty; expected a folder or s3://bucket/prefix")
    if text.startswith("s3://"):
        if len(text.rstrip("/")) <= len("s3://"):
            v.fail("source", f"{text!r} has no bucket; expected s3://bucket/prefix")
        return text.rstrip("/")
    if "://" in text:
        v.fail("source", f"{text!r}: expected a local folder or s3://bucket/prefix")
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        path = Path(base_dir or os.getcwd()) / path
    return str(path.resolve())


def _check_timezone(v: "_Validator", tz: str, where: str) -> None:
    if tz.upper() == "UTC":
        return
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        v.fail(where, f"{tz!r} is not a known IANA time zone; expected e.g. UTC or Europe/Paris")


_HINTS = {
    "name": "a label for the dataset, e.g. listening",
    "source": "the folder or s3://bucket/prefix holding the files",
    "interactions": "the interaction log: path, user, item, timestamp",
    "path": "a file, folder or glob under `source`",
    "interactions.user": "the user id column",
    "interactions.item": "the item id column",
    "timestamp": "column and unit of the event time",
    "column": "a column name",
    "unit": "s|ms|us|ns|iso or a strptime format",
    "take": "the event value(s) that mean a positive interaction, e.g. [play]",
    "positive_threshold": "ratings at or above it count as a take",
    "key": "the id column joined to the interactions",
}


class _Validator:
    """Type checks that raise MappingError as '<file>: <field path>: <what was expected>'."""

    def __init__(self, origin: str):
        self.origin = origin

    def fail(self, where: str, what: str):
        raise MappingError(f"{self.origin}: {where + ': ' if where else ''}{what}")

    def mapping(self, value: Any, where: str, *, required: tuple[str, ...] = (),
                optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping with keys {', '.join(required + optional)}, "
                             f"got {_kind(value)}")
        valid = required + optional
        for key in value:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(where, f"unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")
        prefix = f"{where}." if where else ""
        for key in required:
            if value.get(key) is None:
                hint = _HINTS.get(f"{prefix}{key}") or _HINTS.get(key)
                self.fail(f"{prefix}{key}", f"missing required field{f' ({hint})' if hint else ''}")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected a non-empty string, got {_kind(value)}")
        return value.strip()

    def column(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            self.fail(where, f"expected a column name, got {_kind(value)}")
        if not bronze_name(value) or any(ch in value for ch in "\n\r\t\x00"):
            self.fail(where, f"{value!r} is not a usable column name; expected a name with at least "
                             f"one letter or digit, on one line")
        return value

    def columns(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(where, f"expected a list of column names such as [a, b], got {_kind(value)}")
        return tuple(self.column(c, f"{where}[{i}]") for i, c in enumerate(value))

    def values(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(where, f"expected a list of event values such as [play], got {_kind(value)}")
        out = []
        for i, x in enumerate(value):
            if isinstance(x, bool) or not isinstance(x, (str, int)):
                self.fail(f"{where}[{i}]", f"expected a string (or integer) event value, got {_kind(x)}")
            out.append(str(x))
        return tuple(out)

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, got {_kind(value)}")
        return float(value)

    def path(self, value: Any, where: str) -> str:
        return self.string(value, where)

    def format(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if value not in FORMATS:
            self.fail(where, f"{value!r} is not a supported format; expected one of "
                             f"{'|'.join(FORMATS)} (or leave it out to use the file suffix)")
        return value

    def delimiter(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or len(value) != 1:
            self.fail(where, f"expected a single character, got {_kind(value)}")
        return value

    def distinct(self, where: str, fields: list[tuple[str, str]]) -> None:
        seen: dict[str, str] = {}
        for path, col in fields:
            low = bronze_name(col)
            if low in seen:
                self.fail(where, f"column {col!r} is declared twice (as {low!r}): at {seen[low]} and "
                                 f"at {path}; each source column maps to one field")
            seen[low] = path


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (list, dict)):
        return f"a {'list' if isinstance(value, list) else 'mapping'} ({value!r})"
    return f"{type(value).__name__} {value!r}"


__all__ = [
    "CTX_PREFIX", "ColumnGroup", "DatasetMapping", "EVENT_TYPES", "EventSpec", "FORMATS", "HEADS",
    "IMPLICIT_PLATFORM", "ITEM_ATTR_PREFIX", "InteractionsMapping", "MappingError", "RatingSpec",
    "SideTable", "TIMESTAMP_UNITS", "TimestampSpec", "USER_ATTR_PREFIX", "load_mapping",
    "parse_mapping",
]
