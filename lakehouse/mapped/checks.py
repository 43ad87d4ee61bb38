"""Checking a mapped dataset's rows and typing them into the bronze columns, one batch at a time.

Checked here: a mapping naming a missing column (the file's columns are listed), ids that are
empty, null, nested or break the id grammar (``ID_PATTERN`` in :mod:`lakehouse.contract`),
text in a numeric column, timestamps that do not parse, mix formats, are implausible for the
unit ("is the unit ms?") or do not exist in the time zone. Checks over the whole dataset
(duplicated side-table keys, a ``take`` value that never occurs) run on the staged rows:
:mod:`lakehouse.mapped.staging`. The problems of a file are collected and worded by
:class:`lakehouse.mapped.problems.FileChecks`.
"""

from __future__ import annotations

import json
from typing import Sequence

import polars as pl

from lakehouse.contract import ID_PATTERN, ID_RULE
from lakehouse.mapped.mapping import (
    CTX_PREFIX,
    IMPLICIT_PLATFORM,
    ITEM_ATTR_PREFIX,
    MULTI_VALUE_SEPARATOR,
    USER_ATTR_PREFIX,
    DatasetMapping,
    SideTable,
    TimestampSpec,
    bronze_name,
)
from lakehouse.mapped.problems import FileChecks
from lakehouse.mapped.timestamps import (
    PLAUSIBLE_S,
    UNIT_NAMES,
    US_PER_UNIT,
    localize,
    parse_iso,
    suggest_unit,
)


# ---------------------------------------------------------------- typing with checks

def _nested(dtype: pl.DataType) -> bool:
    return isinstance(dtype, (pl.List, pl.Struct, pl.Array))


def _text(s: pl.Series) -> pl.Series:
    if s.dtype == pl.String:
        return s
    if _nested(s.dtype):  # JSON Lines objects/arrays: keep them readable as JSON text
        return pl.Series(s.name, [None if v is None else json.dumps(v, default=str) for v in s.to_list()],
                         dtype=pl.String)
    return s.cast(pl.String)


def _false(n: int) -> pl.Series:
    return pl.Series([False] * n, dtype=pl.Boolean)


def _ids(fc: FileChecks, df: pl.DataFrame, col: str, field_name: str, noun: str = "id",
         grammar: bool = True) -> pl.Series:
    raw = df[col]
    if _nested(raw.dtype):
        fc.add(df, col, "nested", f"({field_name}): holds nested values ({raw.dtype}); expected plain ids",
               raw.is_not_null() | raw.is_null())
        return _text(raw)
    s = _text(raw).str.strip_chars()
    fc.add(df, col, "empty", f"({field_name}): empty or null {noun}; every row needs one", s.is_null() | (s == ""))
    if grammar:
        bad = (s != "") & ~s.str.contains(ID_PATTERN)
        fc.add(df, col, "grammar", f"({field_name}): not a valid id ({ID_RULE})", bad.fill_null(False))
    return s


def _numeric(fc: FileChecks, df: pl.DataFrame, col: str, field_name: str, *, required: bool = False) -> pl.Series:
    raw = df[col]
    if raw.dtype.is_numeric() or raw.dtype == pl.Boolean:
        s = raw.cast(pl.Float64)
        bad = _false(len(raw))
    elif raw.dtype == pl.String:
        s = raw.str.strip_chars().cast(pl.Float64, strict=False)
        bad = raw.is_not_null() & (raw.str.strip_chars() != "") & s.is_null()
    else:
        s = pl.Series(col, [None] * len(raw), pl.Float64)
        bad = raw.is_not_null()
    fc.add(df, col, "numeric", f"({field_name}): is declared numeric but holds a non-numeric value", bad)
    if required:
        fc.add(df, col, "required", f"({field_name}): empty value; every row needs a number", s.is_null() & ~bad)
    return s


def _timestamps(fc: FileChecks, df: pl.DataFrame, spec: TimestampSpec) -> pl.Series:
    col, unit = spec.column, spec.unit
    raw = df[col]
    label = f"(interactions.timestamp, unit {unit!r}):"
    null_ts = pl.Series(col, [None] * len(raw), pl.Datetime("us", "UTC"))

    if raw.dtype == pl.Null:  # JSON Lines without a single value: reported as empty below
        out = null_ts
    elif isinstance(raw.dtype, pl.Datetime):
        out = raw.dt.cast_time_unit("us")
        out = out.dt.convert_time_zone("UTC") if raw.dtype.time_zone else localize(out, spec.timezone)[0]
    elif raw.dtype == pl.Date:
        out = localize(raw.cast(pl.Datetime("us")), spec.timezone)[0]
    elif spec.is_epoch:
        out = _epoch(fc, df, raw, spec, label)
    elif raw.dtype == pl.String:
        text = raw.str.strip_chars()
        if spec.is_iso:
            out, gap = parse_iso(text, spec.timezone)
        else:
            parsed = text.str.to_datetime(unit, time_unit="us", strict=False)
            if parsed.dtype.time_zone:  # the format has %z
                out, gap = parsed.dt.convert_time_zone("UTC"), _false(len(raw))
            else:
                out, gap = localize(parsed, spec.timezone)
        fc.add(df, col, "gap", f"{label} local time does not exist in time zone {spec.timezone} "
                               f"(skipped by a daylight-saving change)", gap)
        failed = text.is_not_null() & (text != "") & out.is_null() & ~gap
        fc.unparsed(df, spec, label, text, failed, out.is_not_null())
    elif raw.dtype.is_numeric():
        first = raw.drop_nulls()
        hint = suggest_unit(float(first[0])) if first.len() else None
        fc.add(df, col, "numbers", f"{label} holds numbers ({raw.dtype}), not text timestamps"
                                   + (f": is the unit {hint}?" if hint else ""), raw.is_not_null())
        out = null_ts
    else:
        fc.add(df, col, "type", f"{label} holds {raw.dtype} values; expected timestamps", raw.is_not_null())
        out = null_ts

    empty = raw.is_null() | ((raw.str.strip_chars() == "") if raw.dtype == pl.String else _false(len(raw)))
    fc.add(df, col, "empty", f"{label} empty timestamp; every row needs one", empty)
    # only worth saying when nothing else is wrong with the column (FileChecks.problems)
    unread = out.is_null() & ~empty  # e.g. NaN epochs: never write a null event_ts
    fc.add(df, col, "unread", f"{label} value could not be read as a timestamp", unread, secondary=True)
    secs = out.dt.epoch("us").cast(pl.Float64) / 1e6
    odd = ((secs < PLAUSIBLE_S[0]) | (secs >= PLAUSIBLE_S[1])).fill_null(False)
    fc.add(df, col, "implausible", f"{label} implausible timestamp (before 1971 or after 2200)", odd,
           secondary=True)
    return out.alias("event_ts")


def _finite(s: pl.Series) -> pl.Series:
    """NaN and infinities as null: they are no timestamps."""
    return pl.select(pl.when(pl.lit(s).is_finite()).then(pl.lit(s))).to_series().alias(s.name)


def _epoch(fc: FileChecks, df: pl.DataFrame, raw: pl.Series, spec: TimestampSpec, label: str) -> pl.Series:
    col, unit = spec.column, spec.unit
    null_ts = pl.Series(col, [None] * len(raw), pl.Datetime("us", "UTC"))
    if raw.dtype == pl.String:
        text = raw.str.strip_chars()
        as_int = text.cast(pl.Int64, strict=False)
        as_float = _finite(text.cast(pl.Float64, strict=False))
        failed = text.is_not_null() & (text != "") & as_float.is_null()
        fc.unparsed(df, spec, label, text, failed, as_float.is_not_null())
    elif raw.dtype.is_numeric():
        as_int = (raw.cast(pl.Int64, strict=False) if raw.dtype.is_integer()
                  else pl.Series([None] * len(raw), dtype=pl.Int64))
        as_float = _finite(raw.cast(pl.Float64))
    else:
        fc.add(df, col, "type", f"{label} holds {raw.dtype} values; expected epoch {UNIT_NAMES[unit]}",
               raw.is_not_null())
        return null_ts
    secs = as_float * US_PER_UNIT[unit] / 1e6
    odd = (as_float.is_not_null() & ((secs < PLAUSIBLE_S[0]) | (secs >= PLAUSIBLE_S[1]))).fill_null(False)
    if odd.any():
        value = float(as_float.filter(odd)[0])
        year = int(1970 + value * US_PER_UNIT[unit] / 1e6 / 31_556_952)
        hint = suggest_unit(value)
        fc.add(df, col, "epoch_range",
               f"{label} implausible epoch {UNIT_NAMES[unit]}: {value:.0f} would be the year {year}"
               + (f"; is the unit {hint}?" if hint and hint != unit else ""), odd)
        return null_ts
    if unit == "ns":
        micros = as_int // 1000
    else:
        micros = as_int * int(US_PER_UNIT[unit])
    micros = micros.fill_null((as_float * US_PER_UNIT[unit]).round(0).cast(pl.Int64))
    return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


# ---------------------------------------------------------------- batches -> bronze columns

def interaction_fields(m: DatasetMapping) -> dict[str, str]:
    """Source column -> the mapping field naming it, in mapping order (example rows show them so)."""
    it = m.interactions
    out = {it.user: "interactions.user", it.item: "interactions.item",
           it.timestamp.column: "interactions.timestamp.column"}
    if it.platform:
        out[it.platform] = "interactions.platform"
    out.update({c: "interactions.context.categorical" for c in it.context.categorical})
    out.update({c: "interactions.context.numeric" for c in it.context.numeric})
    if it.event:
        out[it.event.column] = "interactions.event.column"
    if it.rating:
        out[it.rating.column] = "interactions.rating.column"
    return out


def side_fields(side: str, t: SideTable) -> dict[str, str]:
    return {t.key: f"{side}.key", **{c: f"{side}.categorical" for c in t.categorical},
            **{c: f"{side}.numeric" for c in t.numeric}}


def _with_all(df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """A JSON Lines block may lack a key other blocks have: it is null there."""
    absent = [c for c in columns if c not in df.columns]
    return df.with_columns([pl.lit(None).alias(c) for c in absent]) if absent else df


def interactions_batch(m: DatasetMapping, fc: FileChecks, df: pl.DataFrame) -> pl.DataFrame:
    """A batch of interaction rows in bronze columns (``event_ts`` in UTC, ``event_date``,
    ``platform``, ``event_type``, ``rating``, ``ctx_*``) plus ``_event_value`` (event logs),
    ``_source_file`` and ``_row``; problems go to `fc`."""
    it = m.interactions
    df = _with_all(df, list(interaction_fields(m)))
    n = df.height
    cols: dict[str, pl.Series] = {
        "user_id": _ids(fc, df, it.user, "interactions.user"),
        "item_id": _ids(fc, df, it.item, "interactions.item"),
        "event_ts": _timestamps(fc, df, it.timestamp),
    }
    cols["platform"] = (_ids(fc, df, it.platform, "interactions.platform", "platform", grammar=False)
                        if it.platform else pl.Series([IMPLICIT_PLATFORM] * n, dtype=pl.String))
    rating = pl.Series([None] * n, dtype=pl.Float64)
    if it.rating:
        rating = _numeric(fc, df, it.rating.column, "interactions.rating.column", required=True)
        etype = pl.select(pl.when(pl.lit(rating) >= it.rating.positive_threshold)
                          .then(pl.lit("take")).otherwise(pl.lit("below_threshold"))).to_series()
    elif it.event:
        values = _text(df[it.event.column]).str.strip_chars()
        etype = values.replace_strict(it.event.value_types(), default="other", return_dtype=pl.String)
        etype = etype.fill_null("other")
        cols["_event_value"] = values
    else:
        etype = pl.Series(["take"] * n, dtype=pl.String)
    cols["event_type"] = etype
    cols["rating"] = rating
    for c in it.context.categorical:
        cols[CTX_PREFIX + bronze_name(c)] = _text(df[c])
    for c in it.context.numeric:
        cols[CTX_PREFIX + bronze_name(c)] = _numeric(fc, df, c, "interactions.context.numeric")
    cols["_source_file"] = pl.Series([fc.uri] * n, dtype=pl.String)
    cols["_row"] = df["_row"]
    out = pl.DataFrame({k: v.alias(k) for k, v in cols.items()})
    return out.with_columns(event_date=pl.col("event_ts").dt.date())


def _multi(values: pl.Series, separator: str) -> pl.Series:
    """A multi-valued column's values, trimmed, empty ones dropped, joined by
    MULTI_VALUE_SEPARATOR (null: none left)."""
    joined = (values.str.split(separator).list.eval(pl.element().str.strip_chars())
              .list.eval(pl.element().filter(pl.element() != "")).list.join(MULTI_VALUE_SEPARATOR))
    return joined.replace("", None)


def side_batch(side: str, t: SideTable, fc: FileChecks, df: pl.DataFrame) -> pl.DataFrame:
    """A batch of a users/items table: the key (``user_id``/``item_id``), ``*_attr_*``,
    ``_source_file`` and ``_row``; problems go to `fc`."""
    df = _with_all(df, list(side_fields(side, t)))
    key = "user_id" if side == "users" else "item_id"
    prefix = USER_ATTR_PREFIX if side == "users" else ITEM_ATTR_PREFIX
    cols = {key: _ids(fc, df, t.key, f"{side}.key")}
    separators = dict(t.multi_valued)
    for c in t.categorical:
        cols[prefix + bronze_name(c)] = _text(df[c]) if c not in separators else \
            _multi(_text(df[c]), separators[c])
    for c in t.numeric:
        cols[prefix + bronze_name(c)] = _numeric(fc, df, c, f"{side}.numeric")
    cols["_source_file"] = pl.Series([fc.uri] * df.height, dtype=pl.String)
    cols["_row"] = df["_row"]
    return pl.DataFrame({k: v.alias(k) for k, v in cols.items()})


__all__ = ["interaction_fields", "interactions_batch", "side_batch", "side_fields"]
