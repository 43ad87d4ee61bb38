"""Typing landing rows to the contract and finding the rows that break it: a reason for each
broken value (type, required, range, accepted values, the id grammar, the landing day), for
duplicate keys (in the export, or already ingested) and for unknown references."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa

from lakehouse.contract import ID_PATTERN, ID_RULE, TS, Column, Entity


# ---------------------------------------------------------------- typing and row checks

PL_TYPES = {
    pa.string(): pl.String,
    pa.int32(): pl.Int32,
    pa.int64(): pl.Int64,
    pa.float64(): pl.Float64,
    pa.bool_(): pl.Boolean,
    TS: pl.Datetime("us", "UTC"),
}


def _integral(x: pl.Expr, target: pl.DataType) -> pl.Expr:
    """A float that is a whole number, as an integer; anything else (45.7, NaN, inf, out of the
    target's range) becomes null, so its row is rejected rather than truncated."""
    ok = x.is_finite() & (x == x.round(0))
    return pl.when(ok).then(x).otherwise(None).cast(target, strict=False)


def _typed(col: Column, raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Cast a raw column to the contract type; a value that does not fit becomes null (and its
    row is rejected). One strictness for every format: JSON Lines values arrive as strings,
    Parquet values typed, and both must fit the contract type exactly (no truncation)."""
    target = PL_TYPES[col.type]
    if dtype == target:
        return raw
    if dtype == pl.String:
        text = raw.str.strip_chars()
        if target == pl.Boolean:
            low = text.str.to_lowercase()
            return pl.when(low == "true").then(True).when(low == "false").then(False).otherwise(None)
        if isinstance(target, pl.Datetime):
            return raw.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        if target.is_integer():
            return pl.coalesce(text.cast(target, strict=False),
                               _integral(text.cast(pl.Float64, strict=False), target))
        return text.cast(target, strict=False)
    if isinstance(target, pl.Datetime):
        if not isinstance(dtype, pl.Datetime):
            return pl.lit(None, dtype=target)  # an epoch number or a date is not a timestamp
        r = raw.dt.cast_time_unit("us")
        return r.dt.replace_time_zone("UTC") if dtype.time_zone is None else r.dt.convert_time_zone("UTC")
    if target == pl.String:
        return raw.cast(pl.String)
    if target.is_integer() and dtype.is_integer():
        return raw.cast(target, strict=False)  # out of the target's range -> null
    if target.is_integer() and dtype.is_float():
        return _integral(raw, target)
    if target.is_float() and dtype.is_numeric() and dtype != pl.Boolean:
        return raw.cast(target, strict=False)
    return pl.lit(None, dtype=target)  # e.g. a number in a boolean column


def _echo(value: pl.Expr, limit: int = 40) -> pl.Expr:
    """At most `limit` characters of a rejected value, control characters shown as '?'."""
    short = value.str.slice(0, limit).str.replace_all(r"[\x00-\x1f\x7f]", "?")
    return pl.when(value.str.len_chars() > limit).then(short + "...").otherwise(short)


def _type_name(col: Column) -> str:
    return "timestamp (ISO-8601, UTC)" if col.type == TS else str(col.type)


def validate_frame(entity: Entity, raw: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Type the raw rows and attach `_reasons` (list of strings; empty when the row is valid)."""
    reasons: list[pl.Expr] = []
    typed: list[pl.Expr] = []
    for col in entity.columns:
        if col.name not in raw.columns:
            typed.append(pl.lit(None, dtype=PL_TYPES[col.type]).alias(col.name))
            reasons.append(pl.lit(f"{col.name}: missing column, expected {_type_name(col)}"))
            continue
        src = pl.col(col.name)
        val = _typed(col, src, raw.schema[col.name])
        typed.append(val.alias(col.name))
        reasons.append(
            pl.when(src.is_not_null() & val.is_null())
            .then(pl.format(f"{col.name}: expected {_type_name(col)}, got '{{}}'", _echo(src.cast(pl.String))))
        )
        if not col.nullable:
            reasons.append(pl.when(src.is_null()).then(pl.lit(f"{col.name}: missing value (required)")))
            if col.type == pa.string():
                reasons.append(pl.when(src.cast(pl.String).str.strip_chars() == "")
                               .then(pl.lit(f"{col.name}: empty string (required)")))
        if col.is_id:
            reasons.append(
                pl.when(val.is_not_null() & ~val.str.contains(ID_PATTERN))
                .then(pl.format(f"{col.name}: '{{}}' is not a valid id ({ID_RULE})",
                                _echo(val)))
            )
        if PL_TYPES[col.type] == pl.Float64:
            reasons.append(pl.when(val.is_nan() | val.is_infinite()).then(
                pl.format(f"{col.name}: expected a finite number, got '{{}}'", val.cast(pl.String))))
        if col.accepted is not None:
            reasons.append(
                pl.when(val.is_not_null() & ~val.is_in(list(col.accepted)))
                .then(pl.format(f"{col.name}: '{{}}' not one of {list(col.accepted)}", val))
            )
        if col.min is not None:
            reasons.append(pl.when(val < col.min).then(
                pl.format(f"{col.name}: {{}} below minimum {col.min:g}", val)))
        if col.max is not None:
            reasons.append(pl.when(val > col.max).then(
                pl.format(f"{col.name}: {{}} above maximum {col.max:g}", val)))
    if entity.event_time:
        ts = _typed(entity.column(entity.event_time), pl.col(entity.event_time),
                    raw.schema.get(entity.event_time, pl.String)) if entity.event_time in raw.columns else None
        if ts is not None:
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
            start = end - dt.timedelta(days=1)
            bad = (ts >= end) | ((ts < start) if entity.event_on_day else pl.lit(False))
            where = "on" if entity.event_on_day else "on or before"
            reasons.append(pl.when(ts.is_not_null() & bad).then(
                pl.format(f"{entity.event_time}: {{}} is not {where} the landing day {day}", ts.cast(pl.String))))
    record = pl.struct([c for c in raw.columns if not c.startswith("_")]).struct.json_encode()
    return raw.select(
        pl.col("_row_number").cast(pl.Int64),
        *typed,
        pl.concat_list(reasons).list.drop_nulls().alias("_reasons"),
        record.alias("_record"),
    )


# ---------------------------------------------------------------- cross-row checks

def _flag(df: pl.DataFrame, mask: pl.Series | pl.Expr, reason: pl.Expr) -> pl.DataFrame:
    return df.with_columns(
        pl.when(mask).then(pl.col("_reasons").list.concat(pl.concat_list(reason)))
        .otherwise(pl.col("_reasons")).alias("_reasons")
    )


def cross_checks(entity: Entity, df: pl.DataFrame, known: dict[str, pl.Series],
                  existing_keys: pl.DataFrame) -> pl.DataFrame:
    key = list(entity.key)
    ok = pl.col("_reasons").list.len() == 0
    # duplicates inside the batch: the first valid occurrence wins, later ones are quarantined
    first = (pl.int_range(pl.len()).over(key) == 0)
    df = df.sort(["landing_date", "_source_file", "_row_number"])
    df = df.with_columns(_dup=~first & ok)
    df = _flag(df, pl.col("_dup"), pl.format(f"duplicate key ({', '.join(key)}) {{}} within the export",
                                             pl.concat_str(key, separator="|"))).drop("_dup")
    # keys already ingested on another landing day
    if existing_keys.height:
        prior = existing_keys.unique(subset=key, keep="first").with_columns(_prior=pl.lit(True))
        df = df.join(prior.select(key + ["_prior", pl.col("landing_date").alias("_prior_day")]),
                     on=key, how="left", nulls_equal=False)
        df = _flag(df, pl.col("_prior").fill_null(False),
                   pl.format(f"duplicate key ({', '.join(key)}) already ingested on landing day {{}}",
                             pl.col("_prior_day").cast(pl.String))).drop("_prior", "_prior_day")
    for col, target in entity.references.items():
        ids = known.get(target)
        if ids is None:
            continue
        df = _flag(df, pl.col(col).is_not_null() & ~pl.col(col).is_in(ids.implode()),
                   pl.format(f"{col}: unknown {target[:-1] if target.endswith('s') else target} id '{{}}'",
                             pl.col(col)))
    return df


__all__ = ["PL_TYPES", "cross_checks", "validate_frame"]
