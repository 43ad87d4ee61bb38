"""Timestamps in a mapping's units: ISO-8601 text (with or without an offset), wall-clock times in
a time zone (and the ones a daylight-saving change skips), the plausible epoch range, and which
epoch unit a number most likely is (the hint a problem's wording gives)."""

from __future__ import annotations

import polars as pl

from lakehouse.mapped.mapping import EPOCH_UNITS

# Epoch plausibility: interaction logs lie between these (seconds since 1970); a value outside
# almost always means the wrong unit (milliseconds read as seconds lands after the year 40000).
PLAUSIBLE_S = (31_536_000, 7_258_118_400)  # 1971-01-01 .. 2200-01-01
LIKELY_S = (631_152_000, 4_102_444_800)  # 1990 .. 2100, to suggest the right unit
US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def suggest_unit(value: float) -> str | None:
    for unit in EPOCH_UNITS:
        secs = value * US_PER_UNIT[unit] / 1e6
        if LIKELY_S[0] <= secs < LIKELY_S[1]:
            return unit
    return None


_ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M%z")
_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def parse_iso(s: pl.Series, tz: str) -> tuple[pl.Series, pl.Series]:
    """(UTC timestamps, naive-but-nonexistent mask) for ISO-8601 text: 'T' or ' ', optional
    fraction, 'Z' or an offset; text without an offset is in `tz`."""
    x = (s.str.strip_chars().str.replace(r"[Zz]$", "+00:00")
         .str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T"))
    aware = pl.select(pl.coalesce([pl.lit(x).str.to_datetime(f, time_unit="us", strict=False)
                                   .dt.convert_time_zone("UTC") for f in _ISO_AWARE])).to_series()
    naive = pl.select(pl.coalesce([pl.lit(x).str.to_datetime(f, time_unit="us", strict=False)
                                   for f in _ISO_NAIVE])).to_series()
    local, gap = localize(naive, tz)
    return aware.fill_null(local).alias(s.name), gap & aware.is_null()


def localize(naive: pl.Series, tz: str) -> tuple[pl.Series, pl.Series]:
    """Naive wall-clock times in `tz` -> UTC; also the mask of times that do not exist there."""
    out = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
    return out, naive.is_not_null() & out.is_null()


__all__ = ["LIKELY_S", "PLAUSIBLE_S", "UNIT_NAMES", "US_PER_UNIT", "localize", "parse_iso", "suggest_unit"]
