"""Reading a mapping file: YAML -> a validated :class:`~lakehouse.mapped.mapping.DatasetMapping`
(:func:`load_mapping`, or :func:`parse_mapping` for a mapping already loaded as a dict). Every
problem is collected first; one MappingError names them all, each with its field path and line."""

import datetime as dt
import os
import re
import zoneinfo
from pathlib import Path
from typing import Any, Mapping

import yaml

from lakehouse.mapped.mapping import (
    HEADS,
    LIST_UNITS,
    TIMESTAMP_UNITS,
    ColumnGroup,
    DatasetMapping,
    EvaluationProtocol,
    EventSpec,
    InteractionsMapping,
    MappingError,
    RatingSpec,
    SideTable,
    TimestampSpec,
)
from lakehouse.mapped.mapping_validator import Validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_mapping(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> DatasetMapping:
    """Read and validate a mapping YAML; raise :class:`MappingError` naming every problem."""
    p = Path(path)
    if not p.is_file():
        raise MappingError(f"mapping file not found: {p} (LAKEHOUSE_MAPPING must name a YAML file)")
    try:
        text = p.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:  # ValueError: e.g. a date 2026-13-01
        raise MappingError(f"{p}: not valid YAML ({' '.join(str(exc).split())})") from exc
    return parse_mapping(data, origin=str(p), environ=environ, base_dir=p.resolve().parent,
                         mapping_path=str(p.resolve()), lines=lines)


def parse_mapping(
    data: Any,
    *,
    origin: str,
    environ: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike | None = None,
    mapping_path: str | None = None,
    lines: Mapping[str, int] | None = None,
) -> DatasetMapping:
    """Validate a mapping already loaded as a dict. `origin` names it in errors; a relative
    `source` is resolved against `base_dir` (default: the current folder); `lines` (field path
    -> line in the file) adds each problem's line.

    Every problem is collected before raising: one :class:`MappingError` lists them all in the
    file's order, each as ``<field path>: <what was expected> (line N)``."""
    v = Validator(origin, lines)
    top = v.mapping(data, "")
    if top is None:
        v.raise_errors()
    name = v.opt(top, "name", v.string)
    if name is not None and not _NAME.match(name):
        v.fail("name", f"{name!r} is not a simple label; expected letters, digits, '_', '-' or '.'")
    raw_source = v.opt(top, "source", v.string)
    source = None if raw_source is None else _resolve_source(v, raw_source, environ, base_dir)
    first_day = None
    if top.get("first_day") is not None:
        first_day = str(top["first_day"])  # YAML reads an unquoted date as a date
        try:
            dt.date.fromisoformat(first_day)
        except ValueError:
            v.fail("first_day", f"{first_day!r} is not a date; expected YYYY-MM-DD (the first "
                                "day of your data, where the daily partitions start)")
    interactions = _interactions(v, top.get("interactions"))
    sides = {side: _side_table(v, side, top.get(side)) for side in ("users", "items")}
    evaluation = _evaluation(v, top.get("evaluation"))
    v.raise_errors()
    return DatasetMapping(name=name, source=source, interactions=interactions, users=sides["users"],
                          items=sides["items"], mapping_path=mapping_path, first_day=first_day,
                          evaluation=evaluation)


def _evaluation(v: "Validator", raw: Any) -> EvaluationProtocol:
    """The `evaluation` section: `exclude_seen` (`all`, or a number of days >= 0), `min_lists`
    and `holdout_lists` (integers >= 1), `list_unit` (`day` or `window`)."""
    default = EvaluationProtocol()
    ev = v.mapping(raw, "evaluation") if raw is not None else None
    if ev is None:
        return default
    days = default.exclude_seen_days
    seen = ev.get("exclude_seen")
    if seen is not None:
        if seen == "all":
            days = None
        elif isinstance(seen, int) and not isinstance(seen, bool) and seen >= 0:
            days = seen
        else:
            v.fail("evaluation.exclude_seen", f"expected `all` (never re-recommend what a user took) "
                                              f"or a number of days >= 0, got {seen!r}")
    counts = {}
    for key, what in (("min_lists", "the fewest held-out lists an evaluation may conclude on"),
                      ("holdout_lists", "the lists the held-out window is sized to hold")):
        n = ev.get(key, getattr(default, key))
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            v.fail(f"evaluation.{key}", f"expected an integer >= 1 ({what}), got {n!r}")
            n = getattr(default, key)
        counts[key] = n
    unit = ev.get("list_unit", default.list_unit)
    if unit not in LIST_UNITS:
        v.fail("evaluation.list_unit", f"expected one of {'|'.join(LIST_UNITS)} (a list is a user's "
                                       f"takes on one day, or over the held-out window), got {unit!r}")
        unit = default.list_unit
    return EvaluationProtocol(exclude_seen_days=days, list_unit=unit, **counts)


def _interactions(v: "Validator", raw: Any) -> InteractionsMapping | None:
    it = v.mapping(raw, "interactions") if raw is not None else None
    if it is None:
        return None
    timestamp = _timestamp(v, it.get("timestamp"))

    context = ColumnGroup()
    if it.get("context") is not None:
        ctx = v.mapping(it["context"], "interactions.context")
        if ctx is not None:
            context = ColumnGroup(v.columns(ctx.get("categorical"), "interactions.context.categorical"),
                                  v.columns(ctx.get("numeric"), "interactions.context.numeric"))

    if it.get("event") is not None and it.get("rating") is not None:
        v.fail("interactions", "`event` and `rating` given together; a dataset is either an event "
                               "log (event) or explicit ratings (rating), not both")
    event = _event(v, it["event"]) if it.get("event") is not None else None
    rating = None
    if it.get("rating") is not None:
        rt = v.mapping(it["rating"], "interactions.rating")
        if rt is not None:
            column = v.opt(rt, "column", v.column, "interactions.rating.column")
            threshold = v.opt(rt, "positive_threshold", v.number, "interactions.rating.positive_threshold")
            if column is not None and threshold is not None:
                rating = RatingSpec(column=column, positive_threshold=threshold)

    fields = {
        "path": v.opt(it, "path", v.path, "interactions.path"),
        "user": v.opt(it, "user", v.column, "interactions.user"),
        "item": v.opt(it, "item", v.column, "interactions.item"),
        "platform": v.opt(it, "platform", v.column, "interactions.platform"),
    }
    fmt = v.format(it.get("format"), "interactions.format")
    delimiter = v.delimiter(it.get("delimiter", ","), "interactions.delimiter")
    v.distinct("interactions", [
        ("interactions.user", fields["user"]),
        ("interactions.item", fields["item"]),
        ("interactions.timestamp.column", timestamp.column if timestamp else None),
        ("interactions.platform", fields["platform"]),
        *[(f"interactions.context.categorical[{i}]", c) for i, c in enumerate(context.categorical)],
        *[(f"interactions.context.numeric[{i}]", c) for i, c in enumerate(context.numeric)],
        ("interactions.event.column", event.column if event else None),
        ("interactions.rating.column", rating.column if rating else None),
    ])
    if None in (fields["path"], fields["user"], fields["item"], timestamp, delimiter) or \
            (it.get("event") is not None and event is None) or (it.get("rating") is not None and rating is None):
        return None  # the problems are recorded; nothing to build
    return InteractionsMapping(path=fields["path"], format=fmt, user=fields["user"], item=fields["item"],
                               timestamp=timestamp, platform=fields["platform"], context=context,
                               event=event, rating=rating, delimiter=delimiter)


def _timestamp(v: "Validator", raw: Any) -> TimestampSpec | None:
    ts = v.mapping(raw, "interactions.timestamp") if raw is not None else None
    if ts is None:
        return None
    unit = v.opt(ts, "unit", v.string, "interactions.timestamp.unit")
    if unit is not None and unit not in TIMESTAMP_UNITS and "%" not in unit:
        v.fail("interactions.timestamp.unit",
               f"{unit!r} is not a timestamp unit; expected s|ms|us|ns (epoch numbers), iso "
               f"(ISO-8601 text) or a strptime format containing % such as \"%d/%m/%Y %H:%M\"")
        unit = None
    timezone = v.string(ts.get("timezone", "UTC"), "interactions.timestamp.timezone")
    if timezone is not None and not _check_timezone(v, timezone, "interactions.timestamp.timezone"):
        timezone = None
    column = v.opt(ts, "column", v.column, "interactions.timestamp.column")
    if None in (unit, timezone, column):
        return None
    return TimestampSpec(column=column, unit=unit, timezone=timezone)


def _event(v: "Validator", raw: Any) -> EventSpec | None:
    ev = v.mapping(raw, "interactions.event")
    if ev is None:
        return None
    values = {h: v.values(ev.get(h), f"interactions.event.{h}") for h in HEADS}
    if ev.get("take") is not None and values["take"] == ():
        v.fail("interactions.event.take", "empty; list the event value(s) that mean a positive "
                                          "interaction, e.g. [play]")
    seen: dict[str, str] = {}
    for head in HEADS:
        for value in values[head] or ():
            if value in seen:
                v.fail(f"interactions.event.{head}",
                       f"value {value!r} is also listed under {seen[value]}; each event value "
                       f"belongs to one head")
            seen[value] = head
    column = v.opt(ev, "column", v.column, "interactions.event.column")
    if column is None or not values["take"] or any(x is None for x in values.values()):
        return None
    return EventSpec(column=column, **values)


def _side_table(v: "Validator", side: str, raw: Any) -> SideTable | None:
    if raw is None:
        return None
    t = v.mapping(raw, side)
    if t is None:
        return None
    key = v.opt(t, "key", v.column, f"{side}.key")
    path = v.opt(t, "path", v.path, f"{side}.path")
    categorical = v.columns(t.get("categorical"), f"{side}.categorical")
    numeric = v.columns(t.get("numeric"), f"{side}.numeric")
    fmt = v.format(t.get("format"), f"{side}.format")
    delimiter = v.delimiter(t.get("delimiter", ","), f"{side}.delimiter")
    multi_valued = _multi_valued(v, side, t.get("multi_valued"), categorical)
    v.distinct(side, [(f"{side}.key", key),
                      *[(f"{side}.categorical[{i}]", c) for i, c in enumerate(categorical)],
                      *[(f"{side}.numeric[{i}]", c) for i, c in enumerate(numeric)]])
    if None in (key, path, delimiter):
        return None
    return SideTable(path=path, format=fmt, key=key, categorical=categorical, numeric=numeric,
                     delimiter=delimiter, multi_valued=multi_valued)


def _multi_valued(v: "Validator", side: str, raw: Any,
                  categorical: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`multi_valued: {column: separator}`: categorical columns holding several values."""
    where = f"{side}.multi_valued"
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        v.fail(where, "expected a mapping of categorical column -> separator, e.g. {genres: \"|\"}")
        return ()
    out = []
    for column, sep in raw.items():
        at = f"{where}.{column}"
        if column not in categorical:
            v.fail(at, f"{column!r} is not one of {side}.categorical {list(categorical)}; only a "
                       f"categorical column can hold several values")
        elif not isinstance(sep, str) or not sep:
            v.fail(at, f"expected the separator of its values as a non-empty string, e.g. \"|\"; "
                       f"got {sep!r}")
        else:
            out.append((column, sep))
    return tuple(out)


def _expand(v: "Validator", text: str, environ: Mapping[str, str]) -> str | None:
    unset: list[str] = []

    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        value = environ.get(var)
        if value:
            return value
        if default is not None:
            return default
        unset.append(var)
        return ""

    if "$" in _VAR.sub("", text):
        v.fail("source", f"{text!r}: unsupported variable syntax; use ${{VAR}} or ${{VAR:-default}}")
        return None
    out = _VAR.sub(sub, text)
    for var in unset:
        v.fail("source", f"${{{var}}} is not set (in {text!r}); set the environment variable "
                         f"or write ${{{var}:-default}}")
    return None if unset else out


def _resolve_source(v: "Validator", raw: str, environ: Mapping[str, str] | None,
                    base_dir: str | os.PathLike | None) -> str | None:
    env = os.environ if environ is None else environ
    text = _expand(v, raw, env)
    if text is None:
        return None
    text = text.strip()
    if not text:
        v.fail("source", "empty; expected a folder or s3://bucket/prefix")
        return None
    if text.startswith("s3://"):
        if len(text.rstrip("/")) <= len("s3://"):
            v.fail("source", f"{text!r} has no bucket; expected s3://bucket/prefix")
            return None
        return text.rstrip("/")
    if "://" in text:
        v.fail("source", f"{text!r}: expected a local folder or s3://bucket/prefix")
        return None
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        path = Path(base_dir or os.getcwd()) / path
    return str(path.resolve())


def _check_timezone(v: "Validator", tz: str, where: str) -> bool:
    if tz.upper() == "UTC":
        return True
    try:
        zoneinfo.ZoneInfo(tz)
        return True
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        v.fail(where, f"{tz!r} is not a known IANA time zone; expected e.g. UTC or Europe/Paris")
        return False


def _key_lines(node: Any, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """Field path -> 1-based line in the YAML file, for every key and list item."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            out.setdefault(path, key.start_mark.line + 1)
            _key_lines(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.setdefault(f"{prefix}[{i}]", item.start_mark.line + 1)
            _key_lines(item, f"{prefix}[{i}]", out)
    return out


__all__ = ["load_mapping", "parse_mapping"]
