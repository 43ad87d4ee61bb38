"""Import a "bring your own data" dataset into bronze, as its mapping file describes it.

Reads the interaction files and the optional user/item side tables (CSV, Parquet or JSON Lines;
a local folder or s3://bucket/prefix) and writes three bronze Delta tables:

- ``mapped_interactions`` (partition ``event_date``): each import replaces exactly the days it
  writes, so re-importing is idempotent;
- ``mapped_users`` / ``mapped_items``: the whole snapshot, overwritten on each import (static
  attributes); without a side table, just the ids seen in the interactions.

Two phases, as in :mod:`lakehouse.ingest`: every file is read and checked completely first,
and any problem raises :class:`SourceDataError` naming the file, the column and an example row
(row numbers count data rows from 1, after a CSV header) before anything is written. Unlike the
landing ingest there is no quarantine: a mapping that misreads a column (wrong unit, wrong
column) would quarantine everything, so the user is told to fix the mapping or the data.
"""

import datetime as dt
import fnmatch
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lakehouse import delta
from lakehouse.contract import TS
from lakehouse.ingest import refused_writes_named
from lakehouse.mapping import (
    CTX_PREFIX,
    EPOCH_UNITS,
    IMPLICIT_PLATFORM,
    ITEM_ATTR_PREFIX,
    USER_ATTR_PREFIX,
    DatasetMapping,
    SideTable,
    TimestampSpec,
    bronze_name,
)
from lakehouse.remediation import clean
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import filesystem_for, list_files

Log = Callable[[str], None]

INTERACTIONS = "mapped_interactions"
USERS = "mapped_users"
ITEMS = "mapped_items"
SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".json": "jsonl"}
MAX_PROBLEMS_SHOWN = 12

# Epoch plausibility: interaction logs lie between these (seconds since 1970); a value outside
# almost always means the wrong unit (milliseconds read as seconds lands after the year 40000).
PLAUSIBLE_S = (31_536_000, 7_258_118_400)  # 1971-01-01 .. 2200-01-01
LIKELY_S = (631_152_000, 4_102_444_800)  # 1990 .. 2100, to suggest the right unit
US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


class SourceDataError(ValueError):
    """The dataset's files cannot be imported as the mapping describes; nothing was written."""


# ---------------------------------------------------------------- report

@dataclass
class TableImport:
    table: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_written: int = 0
    version: int | None = None


@dataclass
class ImportReport:
    dataset: str
    tables: dict[str, TableImport]
    days_written: list[dt.date] = field(default_factory=list)
    days_missing: list[dt.date] = field(default_factory=list)  # requested, absent from the source
    rows_outside_days: int = 0  # valid rows of days not requested
    event_types: dict[str, int] = field(default_factory=dict)  # among the rows written
    users_missing: int = 0  # distinct interaction users absent from the users table
    items_missing: int = 0
    interactions_missing_user: int = 0  # interaction rows (all days) whose user is absent
    interactions_missing_item: int = 0

    @property
    def source_files(self) -> list[str]:
        return [f for t in self.tables.values() for f in t.files]

    @property
    def versions(self) -> dict[str, int | None]:
        return {name: t.version for name, t in self.tables.items()}

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "tables": {n: {"files": t.files, "rows_read": t.rows_read, "rows_written": t.rows_written,
                           "version": t.version} for n, t in self.tables.items()},
            "days_written": [d.isoformat() for d in self.days_written],
            "days_missing": [d.isoformat() for d in self.days_missing],
            "rows_outside_days": self.rows_outside_days,
            "event_types": self.event_types,
            "users_missing": self.users_missing,
            "items_missing": self.items_missing,
            "interactions_missing_user": self.interactions_missing_user,
            "interactions_missing_item": self.interactions_missing_item,
        }

    def metadata(self, table: str) -> dict:
        """Plain JSON-able figures for one bronze table (asset metadata); no None values."""
        t = self.tables[table]
        out: dict = {"dataset": self.dataset, "files": len(t.files), "rows_read": t.rows_read,
                     "rows_written": t.rows_written}
        if t.version is not None:
            out["delta_version"] = t.version
        if table == INTERACTIONS:
            out["days_written"] = len(self.days_written)
            if self.days_written:
                out["first_day"], out["last_day"] = str(self.days_written[0]), str(self.days_written[-1])
            out["event_types"] = dict(self.event_types)
            out["rows_outside_days"] = self.rows_outside_days
            if self.days_missing:
                out["days_missing"] = [d.isoformat() for d in self.days_missing]
        else:
            side = "user" if table == USERS else "item"
            out[f"{side}_ids_missing"] = getattr(self, f"{side}s_missing")
            out[f"interaction_rows_without_{side}"] = getattr(self, f"interactions_missing_{side}")
        return out

    def summary(self) -> str:
        days = (f"{len(self.days_written)} day(s) {self.days_written[0]} .. {self.days_written[-1]}"
                if self.days_written else "no days")
        lines = [f"imported dataset {self.dataset!r}: {days}"]
        for t in self.tables.values():
            lines.append(f"  {t.table:<20} files={len(t.files):<4} read={t.rows_read:<9} "
                         f"written={t.rows_written:<9} version={t.version}")
        if self.event_types:
            lines.append("  event types: " + ", ".join(f"{k}={v}" for k, v in sorted(self.event_types.items())))
        if self.days_missing:
            lines.append(f"  requested days without rows (left as they were): "
                         f"{', '.join(map(str, self.days_missing))}")
        if self.rows_outside_days:
            lines.append(f"  {self.rows_outside_days} valid row(s) on days not requested (not written)")
        for side, ids, rows in (("users", self.users_missing, self.interactions_missing_user),
                                ("items", self.items_missing, self.interactions_missing_item)):
            if ids:
                lines.append(f"  {ids} {side[:-1]} id(s) in the interactions are missing from the "
                             f"{side} table ({rows} interaction rows; their attributes are null)")
        return "\n".join(lines)


# ---------------------------------------------------------------- problems

@dataclass
class _Problem:
    file: str
    column: str | None
    what: str
    rows: int = 0
    example: str = ""

    def __str__(self) -> str:
        col = f"column {self.column!r} " if self.column else ""
        n = f" [{self.rows} row(s)]" if self.rows > 1 else ""
        ex = f"; e.g. {self.example}" if self.example else ""
        return f"{self.file}: {col}{self.what}{n}{ex}"


class _File:
    """One source file's raw rows plus what is needed to quote an example row."""

    def __init__(self, uri: str, df: pl.DataFrame, shown: Sequence[str]):
        self.uri = uri
        self.df = df.with_row_index("_row", offset=1) if "_row" not in df.columns else df
        self.shown = [c for c in shown if c in df.columns]

    def row(self, index: int) -> str:
        """'row 5: listener='L1', ts=1788...' for the 0-based `index`."""
        vals = self.df.row(index, named=True)
        parts = ", ".join(f"{c}={'null' if vals[c] is None else repr(vals[c])}" for c in self.shown)
        return f"row {vals['_row']}: {parts}"

    def problem(self, column: str, what: str, mask: pl.Series, other: pl.Series | None = None,
                other_what: str = "") -> _Problem:
        idx = mask.arg_true()
        ex = self.row(int(idx[0])) if len(idx) else ""
        if other is not None and other.any():
            ex += f" (while {self.row(int(other.arg_true()[0]))} {other_what})"
        return _Problem(self.uri, column, what, int(mask.sum()), ex)


# ---------------------------------------------------------------- files

def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _hidden(rel: str) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.split("/") if part)


def find_files(uri: str) -> tuple[pafs.FileSystem, list[tuple[str, str]]]:
    """(filesystem, [(path in it, uri)]) for a file, a folder (every file under it, except
    hidden names such as _SUCCESS or .crc) or a glob (``*`` also crosses folders)."""
    s3 = uri.startswith("s3://")
    if _is_glob(uri):
        parts = uri.split("/")
        cut = next(i for i, p in enumerate(parts) if _is_glob(p))
        base, pattern = "/".join(parts[:cut]), "/".join(parts[cut:])
    else:
        base, pattern = uri, None
    fs, root = filesystem_for(base)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File and pattern is None:
        infos = [info]
    else:
        infos = []
        for i in list_files(fs, root):
            rel = i.path[len(root):].lstrip("/")
            if _hidden(rel) or (pattern is not None and not fnmatch.fnmatchcase(rel, pattern)):
                continue
            infos.append(i)
    return fs, [(i.path, f"s3://{i.path}" if s3 else i.path) for i in infos]


def _format_of(file_uri: str, declared: str | None, where: str) -> str:
    if declared:
        return declared
    low = file_uri.lower()
    for suffix, fmt in SUFFIX_FORMATS.items():
        if low.endswith(suffix):
            return fmt
    raise SourceDataError(f"{file_uri}: cannot tell the file format from its name; set "
                          f"{where}.format to csv, parquet or jsonl in the mapping")


def _bad_json_line(data: bytes) -> str:
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                return f"line {n} is not a JSON object: {line[:120]!r}"
        except ValueError as exc:
            return f"line {n} is not valid JSON ({exc}): {line[:120]!r}"
    return ""


def read_file(fs: pafs.FileSystem, path: str, uri: str, fmt: str, delimiter: str = ",") -> pl.DataFrame:
    """A source file as a polars frame: CSV as text columns (typed by the checks), Parquet as
    stored, JSON Lines as inferred over the whole file (mixed types become text)."""
    try:
        with fs.open_input_file(path) as f:
            data = f.read()
    except Exception as exc:
        raise SourceDataError(f"{uri}: cannot be read ({' '.join(clean(str(exc)).split())})") from exc
    if not data.strip():
        return pl.DataFrame()
    try:
        if fmt == "csv":
            return pl.read_csv(io.BytesIO(data), infer_schema=False, separator=delimiter)
        if fmt == "parquet":
            return pl.from_arrow(pq.read_table(io.BytesIO(data)))
        return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    except Exception as exc:
        detail = _bad_json_line(data) if fmt == "jsonl" else ""
        msg = detail or " ".join(clean(str(exc)).split())[:300]
        raise SourceDataError(f"{uri}: cannot be read as {fmt} ({msg})") from exc


# ---------------------------------------------------------------- typing with checks

def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric()


def _nested(dtype: pl.DataType) -> bool:
    return isinstance(dtype, (pl.List, pl.Struct, pl.Array))


def _text(s: pl.Series) -> pl.Series:
    if s.dtype == pl.String:
        return s
    if _nested(s.dtype):  # JSON Lines objects/arrays: keep them readable as JSON text
        return pl.Series(s.name, [None if v is None else json.dumps(v, default=str) for v in s.to_list()],
                         dtype=pl.String)
    return s.cast(pl.String)


def _ids(f: _File, col: str, field_name: str, problems: list[_Problem], noun: str = "id") -> pl.Series:
    raw = f.df[col]
    if _nested(raw.dtype):
        problems.append(f.problem(col, f"({field_name}): holds nested values ({raw.dtype}); expected "
                                       f"plain ids", pl.Series([True] * len(raw))))
        return _text(raw)
    s = _text(raw).str.strip_chars()
    bad = s.is_null() | (s == "")
    if bad.any():
        problems.append(f.problem(col, f"({field_name}): empty or null {noun}; every row needs one", bad))
    return s


def _categorical(f: _File, col: str) -> pl.Series:
    return _text(f.df[col])


def _numeric(f: _File, col: str, field_name: str, problems: list[_Problem], *,
             required: bool = False) -> pl.Series:
    raw = f.df[col]
    if _is_numeric(raw.dtype) or raw.dtype == pl.Boolean:
        s = raw.cast(pl.Float64)
        bad = pl.Series([False] * len(raw))
    elif raw.dtype == pl.String:
        s = raw.str.strip_chars().cast(pl.Float64, strict=False)
        bad = raw.is_not_null() & (raw.str.strip_chars() != "") & s.is_null()
    else:
        s = pl.Series(col, [None] * len(raw), pl.Float64)
        bad = raw.is_not_null()
    if bad.any():
        problems.append(f.problem(col, f"({field_name}): is declared numeric but holds a non-numeric value",
                                  bad))
    if required:
        empty = s.is_null() & ~bad
        if empty.any():
            problems.append(f.problem(col, f"({field_name}): empty value; every row needs a number", empty))
    return s


def _suggest_unit(value: float) -> str | None:
    for unit in EPOCH_UNITS:
        secs = value * US_PER_UNIT[unit] / 1e6
        if LIKELY_S[0] <= secs < LIKELY_S[1]:
            return unit
    return None


_ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%M%z")
_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def _parse_iso(s: pl.Series, tz: str) -> tuple[pl.Series, pl.Series]:
    """(UTC timestamps, naive-but-nonexistent mask) for ISO-8601 text: 'T' or ' ', optional
    fraction, 'Z' or an offset; text without an offset is in `tz`."""
    x = (s.str.strip_chars().str.replace(r"[Zz]$", "+00:00")
         .str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T"))
    aware = pl.select(pl.coalesce([pl.lit(x).str.to_datetime(f, time_unit="us", strict=False)
                                   .dt.convert_time_zone("UTC") for f in _ISO_AWARE])).to_series()
    naive = pl.select(pl.coalesce([pl.lit(x).str.to_datetime(f, time_unit="us", strict=False)
                                   for f in _ISO_NAIVE])).to_series()
    local, gap = _localize(naive, tz)
    return aware.fill_null(local).alias(s.name), gap & aware.is_null()


def _localize(naive: pl.Series, tz: str) -> tuple[pl.Series, pl.Series]:
    """Naive wall-clock times in `tz` -> UTC; also the mask of times that do not exist there."""
    out = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
    return out, naive.is_not_null() & out.is_null()


def _timestamps(f: _File, spec: TimestampSpec, problems: list[_Problem]) -> pl.Series:
    col, unit = spec.column, spec.unit
    raw = f.df[col]
    label = f"(interactions.timestamp, unit {unit!r}):"
    n_before = len(problems)
    null_ts = pl.Series(col, [None] * len(raw), pl.Datetime("us", "UTC"))

    if raw.dtype == pl.Null:  # JSON Lines without a single value: reported as empty below
        out = null_ts
    elif isinstance(raw.dtype, pl.Datetime):
        out = raw.dt.cast_time_unit("us")
        out = out.dt.convert_time_zone("UTC") if raw.dtype.time_zone else _localize(out, spec.timezone)[0]
    elif raw.dtype == pl.Date:
        out = _localize(raw.cast(pl.Datetime("us")), spec.timezone)[0]
    elif spec.is_epoch:
        out = _epoch(f, raw, spec, label, problems)
    elif raw.dtype == pl.String:
        text = raw.str.strip_chars()
        if spec.is_iso:
            out, gap = _parse_iso(text, spec.timezone)
            expected, not_expected, is_expected = "ISO-8601 text", "are not ISO-8601 text", "is"
        else:
            parsed = text.str.to_datetime(unit, time_unit="us", strict=False)
            if parsed.dtype.time_zone:  # the format has %z
                out, gap = parsed.dt.convert_time_zone("UTC"), pl.Series([False] * len(raw))
            else:
                out, gap = _localize(parsed, spec.timezone)
            expected = f"the format {unit!r}"
            not_expected, is_expected = f"do not match {expected}", "matches"
        failed = text.is_not_null() & (text != "") & out.is_null() & ~gap
        ok = out.is_not_null()
        if gap.any():
            problems.append(f.problem(col, f"{label} local time does not exist in time zone "
                                           f"{spec.timezone} (skipped by a daylight-saving change)", gap))
        if failed.any():
            numbers = text.cast(pl.Float64, strict=False)
            if ok.any():
                what = (f"{label} mixed timestamp formats: some values {not_expected}"
                        + (" (epoch numbers among text timestamps)" if numbers.filter(failed).is_not_null().any()
                           else ""))
                problems.append(f.problem(col, what, failed, ok, f"{is_expected} {expected}"))
            elif numbers.filter(failed).is_not_null().all():
                hint = _suggest_unit(float(numbers.filter(failed)[0]))
                problems.append(f.problem(col, f"{label} values are epoch numbers, not {expected}"
                                               + (f": is the unit {hint}?" if hint else ""), failed))
            else:
                hint = (" (it may be ISO-8601: is the unit iso?)" if not spec.is_iso
                        and _parse_iso(text.filter(failed).head(1), spec.timezone)[0].is_not_null().all()
                        else "; set the unit to a strptime format such as \"%d/%m/%Y %H:%M\""
                        if spec.is_iso else "")
                problems.append(f.problem(col, f"{label} values {not_expected}{hint}", failed))
    elif _is_numeric(raw.dtype):
        hint = _suggest_unit(float(raw.drop_nulls()[0])) if raw.drop_nulls().len() else None
        problems.append(f.problem(col, f"{label} holds numbers ({raw.dtype}), not text timestamps"
                                       + (f": is the unit {hint}?" if hint else ""), raw.is_not_null()))
        out = null_ts
    else:
        problems.append(f.problem(col, f"{label} holds {raw.dtype} values; expected timestamps",
                                  raw.is_not_null()))
        out = null_ts

    empty = raw.is_null() | ((raw == "") if raw.dtype == pl.String else pl.Series([False] * len(raw)))
    if empty.any():
        problems.append(f.problem(col, f"{label} empty timestamp; every row needs one", empty))
    if len(problems) == n_before:
        unread = out.is_null() & ~empty  # e.g. NaN epochs: never write a null event_ts
        if unread.any():
            problems.append(f.problem(col, f"{label} value could not be read as a timestamp", unread))
            return out.alias("event_ts")
        secs = out.dt.epoch("us").cast(pl.Float64) / 1e6
        odd = (secs < PLAUSIBLE_S[0]) | (secs >= PLAUSIBLE_S[1])
        if odd.any():
            problems.append(f.problem(col, f"{label} implausible timestamp (before 1971 or after 2200)",
                                      odd.fill_null(False)))
    return out.alias("event_ts")


def _finite(s: pl.Series) -> pl.Series:
    """NaN and infinities as null: they are no timestamps."""
    return pl.select(pl.when(pl.lit(s).is_finite()).then(pl.lit(s))).to_series().alias(s.name)


def _epoch(f: _File, raw: pl.Series, spec: TimestampSpec, label: str,
           problems: list[_Problem]) -> pl.Series:
    col, unit = spec.column, spec.unit
    if raw.dtype == pl.String:
        text = raw.str.strip_chars()
        as_int = text.cast(pl.Int64, strict=False)
        as_float = _finite(text.cast(pl.Float64, strict=False))
        failed = text.is_not_null() & (text != "") & as_float.is_null()
        if failed.any():
            ok = as_float.is_not_null()
            if ok.any():
                problems.append(f.problem(col, f"{label} mixed timestamp formats: some values are not "
                                               f"epoch numbers", failed, ok, "is a number"))
            else:
                iso = _parse_iso(text.filter(failed).head(1), spec.timezone)[0].is_not_null().all()
                problems.append(f.problem(col, f"{label} values are not epoch {UNIT_NAMES[unit]}"
                                               + (": they look like ISO-8601 text, is the unit iso?" if iso
                                                  else "; use a strptime format as the unit for other text"),
                                          failed))
    elif _is_numeric(raw.dtype):
        as_int = (raw.cast(pl.Int64, strict=False) if raw.dtype.is_integer()
                  else pl.Series([None] * len(raw), dtype=pl.Int64))
        as_float = _finite(raw.cast(pl.Float64))
    else:
        problems.append(f.problem(col, f"{label} holds {raw.dtype} values; expected epoch "
                                       f"{UNIT_NAMES[unit]}", raw.is_not_null()))
        return pl.Series(col, [None] * len(raw), pl.Datetime("us", "UTC"))
    secs = as_float * US_PER_UNIT[unit] / 1e6
    odd = as_float.is_not_null() & ((secs < PLAUSIBLE_S[0]) | (secs >= PLAUSIBLE_S[1]))
    if odd.any():
        value = float(as_float.filter(odd)[0])
        year = int(1970 + value * US_PER_UNIT[unit] / 1e6 / 31_556_952)
        hint = _suggest_unit(value)
        problems.append(f.problem(
            col, f"{label} implausible epoch {UNIT_NAMES[unit]}: {value:.0f} would be the year {year}"
                 + (f"; is the unit {hint}?" if hint and hint != unit else ""), odd))
        return pl.Series(col, [None] * len(raw), pl.Datetime("us", "UTC"))
    if unit == "ns":
        micros = as_int // 1000
    else:
        micros = as_int * int(US_PER_UNIT[unit])
    micros = micros.fill_null((as_float * US_PER_UNIT[unit]).round(0).cast(pl.Int64))
    return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


# ---------------------------------------------------------------- tables

def _check_columns(f: _File, needed: dict[str, str], problems: list[_Problem]) -> bool:
    missing = [c for c in needed if c not in f.df.columns]
    for c in missing:
        cols = ", ".join(c for c in f.df.columns if c != "_row") or "none"
        problems.append(_Problem(f.uri, c, f"({needed[c]}): is not in the file; its columns are: {cols}"))
    return not missing


def _interaction_fields(m: DatasetMapping) -> dict[str, str]:
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


def _interactions_frame(m: DatasetMapping, f: _File, problems: list[_Problem]) -> pl.DataFrame | None:
    it = m.interactions
    fields = _interaction_fields(m)
    if not _check_columns(f, fields, problems):
        return None
    n = f.df.height
    cols: dict[str, pl.Series] = {
        "user_id": _ids(f, it.user, "interactions.user", problems),
        "item_id": _ids(f, it.item, "interactions.item", problems),
        "event_ts": _timestamps(f, it.timestamp, problems),
    }
    cols["platform"] = (_ids(f, it.platform, "interactions.platform", problems, "platform") if it.platform
                        else pl.Series([IMPLICIT_PLATFORM] * n, dtype=pl.String))
    rating = pl.Series([None] * n, dtype=pl.Float64)
    if it.rating:
        rating = _numeric(f, it.rating.column, "interactions.rating.column", problems, required=True)
        etype = pl.select(pl.when(pl.lit(rating) >= it.rating.positive_threshold)
                          .then(pl.lit("take")).otherwise(pl.lit("below_threshold"))).to_series()
    elif it.event:
        values = _text(f.df[it.event.column]).str.strip_chars()
        etype = values.replace_strict(it.event.value_types(), default="other", return_dtype=pl.String)
        etype = etype.fill_null("other")
        cols["_event_value"] = values
    else:
        etype = pl.Series(["take"] * n, dtype=pl.String)
    cols["event_type"] = etype
    cols["rating"] = rating
    for c in it.context.categorical:
        cols[CTX_PREFIX + bronze_name(c)] = _categorical(f, c)
    for c in it.context.numeric:
        cols[CTX_PREFIX + bronze_name(c)] = _numeric(f, c, "interactions.context.numeric", problems)
    cols["_source_file"] = pl.Series([f.uri] * n, dtype=pl.String)
    cols["_row"] = f.df["_row"].cast(pl.Int64)
    return pl.DataFrame({k: v.alias(k) for k, v in cols.items()})


def _side_frame(m: DatasetMapping, side: str, t: SideTable, f: _File, problems: list[_Problem]) -> pl.DataFrame | None:
    fields = {t.key: f"{side}.key", **{c: f"{side}.categorical" for c in t.categorical},
              **{c: f"{side}.numeric" for c in t.numeric}}
    if not _check_columns(f, fields, problems):
        return None
    key = "user_id" if side == "users" else "item_id"
    prefix = USER_ATTR_PREFIX if side == "users" else ITEM_ATTR_PREFIX
    cols = {key: _ids(f, t.key, f"{side}.key", problems)}
    for c in t.categorical:
        cols[prefix + bronze_name(c)] = _categorical(f, c)
    for c in t.numeric:
        cols[prefix + bronze_name(c)] = _numeric(f, c, f"{side}.numeric", problems)
    cols["_source_file"] = pl.Series([f.uri] * f.df.height, dtype=pl.String)
    cols["_row"] = f.df["_row"].cast(pl.Int64)
    return pl.DataFrame({k: v.alias(k) for k, v in cols.items()})


def _read_table(m: DatasetMapping, where: str, path: str, fmt: str | None, delimiter: str,
                shown: Sequence[str], result: TableImport, log: Log) -> list[_File]:
    uri = m.uri(path)
    fs, files = find_files(uri)
    if not files:
        raise SourceDataError(
            f"no source files found for {where} at {uri} ({where}.path = {path!r} under source "
            f"{m.source}; mapping {m.mapping_path or m.name}); nothing was written")
    out = []
    for fs_path, file_uri in files:
        df = read_file(fs, fs_path, file_uri, _format_of(file_uri, fmt, where), delimiter)
        result.files.append(file_uri)
        if df.width == 0:
            log(f"[import] {file_uri}: empty file, skipped")
            continue
        result.rows_read += df.height
        out.append(_File(file_uri, df, shown))
    return out


def _duplicates(side: str, t: SideTable, frame: pl.DataFrame, files: dict[str, _File]) -> _Problem | None:
    key = frame.columns[0]
    dup = frame.filter(pl.len().over(key) > 1)
    if not dup.height:
        return None
    first_key = dup.sort("_source_file", "_row")[key][0]
    rows = dup.filter(pl.col(key) == first_key).sort("_source_file", "_row")
    a, b = rows.row(0, named=True), rows.row(1, named=True)
    fa, fb = files[a["_source_file"]], files[b["_source_file"]]
    where = "" if fa is fb else f" of {fb.uri}"
    ex = f"{fa.row(a['_row'] - 1)} and {fb.row(b['_row'] - 1)}{where}"
    n = dup[key].n_unique()
    return _Problem(fa.uri, t.key, f"({side}.key): key {first_key!r} appears {rows.height} times; "
                                   f"each {side[:-1]} needs one row ({n} duplicated key(s))", 0, ex)


def _check_heads(m: DatasetMapping, inter: pl.DataFrame, files: list[str], log: Log) -> None:
    """A mapping whose take values never occur (a typo, another spelling, a wrong threshold)
    would import a dataset without a single positive: stop and show what the column holds."""
    it = m.interactions
    where = f"mapping {m.mapping_path or m.name}"
    if it.event:
        found = inter.group_by("_event_value").len().sort("len", "_event_value", descending=[True, False])
        seen = set(found["_event_value"].drop_nulls())
        if not seen & set(it.event.take):
            listed = ", ".join(f"{v!r} ({n})" for v, n in found.head(10).iter_rows())
            raise SourceDataError(
                f"no interaction is a take: none of interactions.event.take {list(it.event.take)} occurs "
                f"in column {it.event.column!r} of {', '.join(files)}; values found (rows): {listed} "
                f"({where}); nothing was written")
        for head in ("complete", "music_like"):
            unseen = [v for v in getattr(it.event, head) if v not in seen]
            if unseen:
                log(f"[import] warning: interactions.event.{head} values {unseen} never occur in column "
                    f"{it.event.column!r}")
    elif it.rating and not (inter["rating"] >= it.rating.positive_threshold).any():
        raise SourceDataError(
            f"no interaction is a take: no rating in column {it.rating.column!r} reaches "
            f"interactions.rating.positive_threshold {it.rating.positive_threshold:g} (ratings range "
            f"{inter['rating'].min():g} .. {inter['rating'].max():g}) ({where}); nothing was written")


def _interaction_ids(df: pl.DataFrame) -> pl.Series:
    """Stable ids: md5 of the row's identity plus its ordinal among identical rows (by file and
    row), so re-importing the same data gives the same ids. DuckDB: one vectorised pass."""
    rows = df.select("user_id", "item_id", "event_ts", "event_type", "rating", "_source_file",
                     "_row").with_row_index("_i").to_arrow()
    con = duckdb.connect()
    try:
        con.register("rows", rows)
        ids = con.sql("""
            select md5(concat_ws(chr(31), user_id, item_id, cast(epoch_us(event_ts) as varchar),
                       event_type, coalesce(cast(rating as varchar), ''),
                       cast(row_number() over (
                           partition by user_id, item_id, event_ts, event_type, rating
                           order by _source_file, _row) - 1 as varchar))) as interaction_id
            from rows order by _i""").to_arrow_table()
    finally:
        con.close()
    return pl.from_arrow(ids.column("interaction_id")).cast(pl.String).alias("interaction_id")


def _schema(fields: list[tuple[str, pa.DataType, bool]]) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=nullable) for n, t, nullable in fields])


def _attr_fields(columns: dict[str, str]) -> list[tuple[str, pa.DataType, bool]]:
    return [(c, pa.string() if kind == "categorical" else pa.float64(), True) for c, kind in columns.items()]


def _raise(problems: list[_Problem], m: DatasetMapping) -> None:
    shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
    where = m.mapping_path or m.name
    raise SourceDataError(f"{len(problems)} problem(s) in the source data of mapping {where}; nothing "
                          f"was written. Fix the data or the mapping and re-run:\n{shown}{more}")


# ---------------------------------------------------------------- the run

def import_dataset(
    settings: LakehouseSettings,
    mapping: DatasetMapping,
    *,
    days: Sequence[dt.date] | None = None,
    log: Log = print,
    dry_run: bool = False,
) -> ImportReport:
    """Import the mapped dataset into bronze; see the module docstring. `days` restricts the
    interaction days written (None: every day present in the source). `dry_run`: read and check
    everything, report what would be written, write nothing."""
    log = log or (lambda _m: None)
    it = mapping.interactions
    opts = settings.storage_options()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    report = ImportReport(dataset=mapping.name, tables={INTERACTIONS: TableImport(INTERACTIONS)})
    problems: list[_Problem] = []

    # Phase 1: read and check every file; nothing is written while a problem is open.
    shown = list(_interaction_fields(mapping))
    files = _read_table(mapping, "interactions", it.path, it.format, it.delimiter, shown,
                        report.tables[INTERACTIONS], log)
    frames = [fr for f in files if (fr := _interactions_frame(mapping, f, problems)) is not None]

    sides: dict[str, pl.DataFrame | None] = {}
    for side, name in (("users", USERS), ("items", ITEMS)):
        report.tables[name] = TableImport(name)
        t: SideTable | None = getattr(mapping, side)
        if t is None:
            sides[side] = None
            continue
        sfiles = _read_table(mapping, side, t.path, t.format, t.delimiter, t.source_columns(),
                             report.tables[name], log)
        sframes = [fr for f in sfiles if (fr := _side_frame(mapping, side, t, f, problems)) is not None]
        frame = pl.concat(sframes, how="vertical_relaxed") if sframes else None
        if frame is not None and not problems:
            dup = _duplicates(side, t, frame, {f.uri: f for f in sfiles})
            if dup:
                problems.append(dup)
        sides[side] = frame
    if problems:
        _raise(problems, mapping)

    if not frames or sum(fr.height for fr in frames) == 0:
        raise SourceDataError(f"no interaction rows in {', '.join(report.tables[INTERACTIONS].files)} "
                              f"(mapping {mapping.mapping_path or mapping.name}); nothing was written")
    inter = pl.concat(frames, how="vertical_relaxed").sort("_source_file", "_row")
    _check_heads(mapping, inter, report.tables[INTERACTIONS].files, log)
    inter = inter.with_columns(event_date=pl.col("event_ts").dt.date())
    inter = inter.with_columns(_interaction_ids(inter))

    # ids missing from a declared side table are fine (null attributes), but counted
    for side, key, attr in (("users", "user_id", "users_missing"), ("items", "item_id", "items_missing")):
        frame = sides[side]
        if frame is None:
            continue
        absent = ~inter[key].is_in(frame[key].implode())
        setattr(report, attr, inter.filter(absent)[key].n_unique())
        setattr(report, f"interactions_missing_{side[:-1]}", int(absent.sum()))

    present = sorted(set(inter["event_date"].to_list()))
    if days is not None:
        wanted = sorted(set(days))
        report.days_missing = [d for d in wanted if d not in set(present)]
        selected = inter.filter(pl.col("event_date").is_in(wanted))
        report.rows_outside_days = inter.height - selected.height
    else:
        selected = inter
    report.days_written = sorted(set(selected["event_date"].to_list()))
    report.event_types = dict(sorted(Counter(selected["event_type"].to_list()).items()))

    ctx = mapping.context_columns()
    inter_schema = _schema([
        ("interaction_id", pa.string(), False), ("user_id", pa.string(), False),
        ("item_id", pa.string(), False), ("event_ts", TS, False), ("event_date", pa.date32(), False),
        ("platform", pa.string(), False), ("event_type", pa.string(), False),
        ("rating", pa.float64(), True), *_attr_fields(ctx),
        ("_source_file", pa.string(), False), ("_ingested_at", TS, False)])
    stamp = pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("_ingested_at")
    inter_table = (selected.sort("event_ts", "user_id", "item_id", "interaction_id")
                   .with_columns(stamp).select(inter_schema.names).to_arrow().cast(inter_schema))

    side_tables = {}
    for side, name, key, cols in (("users", USERS, "user_id", mapping.user_columns()),
                                  ("items", ITEMS, "item_id", mapping.item_columns())):
        schema = _schema([(key, pa.string(), False), *_attr_fields(cols),
                          ("_source_file", pa.string(), False), ("_ingested_at", TS, False)])
        frame = sides[side]
        if frame is None:  # no side table: the ids seen in the interactions, so dbt's source exists
            frame = (inter.select(key).unique().with_columns(
                _source_file=pl.lit(mapping.uri(it.path))))
        side_tables[name] = frame.sort(key).with_columns(stamp).select(schema.names).to_arrow().cast(schema)

    if dry_run:
        for name, table in side_tables.items():
            report.tables[name].rows_written = table.num_rows
        report.tables[INTERACTIONS].rows_written = inter_table.num_rows
        return report

    # Phase 2: interactions (only the days written), then the two snapshots.
    committed: list[str] = []
    if report.days_written:
        uri = settings.table_uri("bronze", INTERACTIONS)
        with refused_writes_named(uri, committed):
            report.tables[INTERACTIONS].version = delta.replace_partitions(
                uri, inter_table, predicate=delta.in_predicate("event_date", report.days_written),
                partition_by=["event_date"], storage_options=opts)
        committed.append(f"bronze/{INTERACTIONS}")
        report.tables[INTERACTIONS].rows_written = inter_table.num_rows
        log(f"[import] wrote bronze/{INTERACTIONS}: {inter_table.num_rows} rows on "
            f"{len(report.days_written)} day(s) (version {report.tables[INTERACTIONS].version})")
    else:
        log(f"[import] none of the requested days has interactions; bronze/{INTERACTIONS} unchanged")
    for name, table in side_tables.items():
        uri = settings.table_uri("bronze", name)
        with refused_writes_named(uri, committed):
            report.tables[name].version = delta.overwrite(uri, table, storage_options=opts)
        committed.append(f"bronze/{name}")
        report.tables[name].rows_written = table.num_rows
        log(f"[import] wrote bronze/{name}: {table.num_rows} rows (version {report.tables[name].version})")
    return report


__all__ = ["INTERACTIONS", "ITEMS", "USERS", "ImportReport", "SourceDataError", "TableImport",
           "find_files", "import_dataset", "read_file"]


def main(argv: list[str] | None = None) -> int:
    """`python -m lakehouse.mapped_import MAPPING`: check a mapping and its files, write nothing."""
    import argparse

    from lakehouse.mapping import MappingError, load_mapping

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("mapping", help="the mapping YAML")
    args = p.parse_args(argv)
    try:
        report = import_dataset(LakehouseSettings.from_env(), load_mapping(args.mapping),
                                dry_run=True, log=None)
    except (MappingError, SourceDataError) as e:
        print(f"error: {e}")
        return 1
    print(report.summary().replace("imported dataset", "checked dataset (nothing written)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
