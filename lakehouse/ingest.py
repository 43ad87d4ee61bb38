"""Bronze ingest: landing files of some days -> bronze Delta tables + quarantine.

Two phases, so a bad file loses nothing:
1. read and validate every file of every requested day (no writes). A file that cannot be read
   at all raises :class:`LandingFileError` naming the file and what was wrong; every table is
   left as it was. Rows that break the contract are kept with their reasons.
2. one Delta commit per table replaces exactly the requested days (idempotent re-runs), and the
   rejected rows replace those days' rows in the quarantine table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse import delta
from lakehouse.contract import (
    ENTITIES,
    QUARANTINE_SCHEMA,
    TS,
    Column,
    Entity,
    bronze_schema,
)
from lakehouse.remediation import clean
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import filesystem_for, join_uri, list_files

Log = Callable[[str], None]
QUARANTINE = "quarantine"
SUPPORTED = (".parquet", ".jsonl", ".ndjson")


class LandingFileError(RuntimeError):
    """A landing file that cannot be read at all: the run stops before writing anything."""


class StorageNotWritableError(RuntimeError):
    """The lakehouse storage refused a write (read-only disk, no permission): nothing is wrong
    with the data, and re-running the same days once the storage is writable is safe."""


class MissingLandingError(LandingFileError):
    """A requested day has no landing files at all (not landed yet, or expired): replacing its
    bronze rows with nothing would lose data, so the run stops and changes nothing."""


@dataclass
class EntityResult:
    entity: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    version: int | None = None


@dataclass
class IngestReport:
    days: list[dt.date]
    entities: dict[str, EntityResult]
    quarantine_version: int | None = None

    @property
    def rows_quarantined(self) -> int:
        return sum(r.rows_quarantined for r in self.entities.values())

    def summary(self) -> str:
        lines = [f"ingested {len(self.days)} day(s): {self.days[0]} .. {self.days[-1]}"]
        for r in self.entities.values():
            lines.append(
                f"  {r.entity:<12} files={len(r.files):<4} read={r.rows_read:<9} "
                f"valid={r.rows_valid:<9} quarantined={r.rows_quarantined}"
            )
            for reason, n in r.reasons.most_common(5):
                lines.append(f"      {n} x {reason}")
        return "\n".join(lines)


def _day_folder(day: dt.date) -> str:
    return f"date={day.isoformat()}"


def landing_files(settings: LakehouseSettings, entity: str, day: dt.date):
    uri = join_uri(settings.landing_uri, entity, _day_folder(day))
    fs, root = filesystem_for(uri)
    infos = [i for i in list_files(fs, root) if not i.base_name.startswith(("_", "."))]
    return fs, uri, root, infos


# ---------------------------------------------------------------- reading

def _read_parquet(fs, path: str, uri: str) -> pl.DataFrame:
    try:
        with fs.open_input_file(path) as f:
            table = pq.read_table(f)
    except Exception as exc:  # corrupt, truncated, not parquet
        raise LandingFileError(f"{uri}: cannot be read as Parquet ({exc})") from exc
    return pl.from_arrow(table)


def _read_jsonl(fs, path: str, uri: str, entity: Entity) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Returns (rows as strings, unparseable lines). All values come in as strings and are
    typed by the contract step, so a mistyped value rejects its row, not the file."""
    try:
        with fs.open_input_stream(path) as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LandingFileError(f"{uri}: not UTF-8 text, expected JSON Lines ({exc})") from exc
    except Exception as exc:
        raise LandingFileError(f"{uri}: cannot be read ({exc})") from exc
    schema = {c.name: pl.String for c in entity.columns}
    try:
        df = pl.read_ndjson(io.BytesIO(raw), schema=schema) if text.strip() else pl.DataFrame(schema=schema)
        df = df.with_row_index("_row_number", offset=1)
        # read_ndjson skips blank lines; line numbers stay right only without them
        if text.count("\n") + (0 if text.endswith("\n") else 1) != df.height and text.strip():
            raise ValueError("blank lines")
        return df, pl.DataFrame()
    except Exception:
        pass
    # Slow path, only for files with bad lines: find them one by one.
    rows, bad = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            rows.append({"_row_number": n, **{k: None if obj.get(k) is None else
                                               (json.dumps(obj[k]) if isinstance(obj[k], (dict, list))
                                                else str(obj[k]).lower() if isinstance(obj[k], bool)
                                                else str(obj[k])) for k in schema}})
        except ValueError as exc:
            bad.append({"_row_number": n, "reason": f"line is not a valid JSON object ({exc})",
                        "record": line[:2000]})
    if not rows and bad:
        raise LandingFileError(f"{uri}: no line parses as JSON; first error at line "
                               f"{bad[0]['_row_number']}: {bad[0]['reason']}")
    df = pl.DataFrame(rows, schema={"_row_number": pl.UInt32, **schema})
    return df, pl.DataFrame(bad)


# ---------------------------------------------------------------- typing and row checks

_PL_TYPES = {
    pa.string(): pl.String,
    pa.int32(): pl.Int32,
    pa.int64(): pl.Int64,
    pa.float64(): pl.Float64,
    pa.bool_(): pl.Boolean,
    TS: pl.Datetime("us", "UTC"),
}


def _typed(col: Column, raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Cast a raw column to the contract type; values that don't convert become null."""
    target = _PL_TYPES[col.type]
    if dtype == target:
        return raw
    if dtype == pl.String:
        if target == pl.Boolean:
            low = raw.str.to_lowercase()
            return pl.when(low == "true").then(True).when(low == "false").then(False).otherwise(None)
        if isinstance(target, pl.Datetime):
            return raw.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        return raw.str.strip_chars().cast(target, strict=False)
    if isinstance(target, pl.Datetime) and isinstance(dtype, pl.Datetime):
        r = raw.dt.cast_time_unit("us")
        return r.dt.replace_time_zone("UTC") if dtype.time_zone is None else r.dt.convert_time_zone("UTC")
    if target == pl.String:
        return raw.cast(pl.String)
    return raw.cast(target, strict=False)


def _type_name(col: Column) -> str:
    return "timestamp (ISO-8601, UTC)" if col.type == TS else str(col.type)


def validate_frame(entity: Entity, raw: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Type the raw rows and attach `_reasons` (list of strings; empty when the row is valid)."""
    reasons: list[pl.Expr] = []
    typed: list[pl.Expr] = []
    for col in entity.columns:
        if col.name not in raw.columns:
            typed.append(pl.lit(None, dtype=_PL_TYPES[col.type]).alias(col.name))
            reasons.append(pl.lit(f"{col.name}: missing column, expected {_type_name(col)}"))
            continue
        src = pl.col(col.name)
        val = _typed(col, src, raw.schema[col.name])
        typed.append(val.alias(col.name))
        reasons.append(
            pl.when(src.is_not_null() & val.is_null())
            .then(pl.format(f"{col.name}: expected {_type_name(col)}, got '{{}}'", src.cast(pl.String)))
        )
        if not col.nullable:
            reasons.append(pl.when(src.is_null()).then(pl.lit(f"{col.name}: missing value (required)")))
            if col.type == pa.string():
                reasons.append(pl.when(src.cast(pl.String).str.strip_chars() == "")
                               .then(pl.lit(f"{col.name}: empty string (required)")))
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


def _cross_checks(entity: Entity, df: pl.DataFrame, known: dict[str, pl.Series],
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


# ---------------------------------------------------------------- refused writes

# deltalake reports a refused write as OSError or DeltaError, with the OS reason buried in a
# chain of Rust messages (and ANSI colours); these markers find it in any of them.
_READ_ONLY = ("os error 30", "read-only file system", "readonlyfilesystem")
_NO_PERMISSION = ("os error 13", "permission denied", "permissiondenied")


@contextlib.contextmanager
def refused_writes_named(uri: str, committed: Sequence[str] = ()):
    """Re-raise a write the storage refused as :class:`StorageNotWritableError` naming `uri`,
    the OS reason, and what this run had committed before (other errors pass through)."""
    try:
        yield
    except Exception as exc:
        text = " ".join(clean(str(exc)).split())
        low = text.lower()
        if any(m in low for m in _READ_ONLY):
            why = "is read-only"
        elif any(m in low for m in _NO_PERMISSION):
            why = "is not writable (permission denied)"
        else:
            raise
        text = text.replace(" ↳ ", ": ")
        done = ", ".join(committed) if committed else "nothing"
        raise StorageNotWritableError(
            f"cannot write {uri}: the storage {why} ({text}). Committed by this run before it: "
            f"{done}. Make the storage writable and re-run the same day(s); the ingest replaces "
            f"whole days, so a re-run is safe.") from exc


# ---------------------------------------------------------------- the run

def _read_entity_day(settings, entity: Entity, day: dt.date, result: EntityResult,
                     now: dt.datetime) -> tuple[pl.DataFrame, list[dict]]:
    fs, uri, root, infos = landing_files(settings, entity.name, day)
    frames, rejected = [], []
    for info in infos:
        file_uri = join_uri(uri, info.path[len(root):]) if info.path.startswith(root) else info.path
        name = info.base_name.lower()
        if name.endswith(".parquet"):
            raw, bad_lines = _read_parquet(fs, info.path, file_uri), pl.DataFrame()
            raw = raw.with_row_index("_row_number", offset=1)
        elif name.endswith((".jsonl", ".ndjson")):
            raw, bad_lines = _read_jsonl(fs, info.path, file_uri, entity)
        else:
            raise LandingFileError(f"{file_uri}: unsupported file type, expected one of {SUPPORTED}")
        result.files.append(file_uri)
        result.rows_read += raw.height + bad_lines.height
        result.rows_quarantined += bad_lines.height
        if bad_lines.height:
            result.reasons["line: not valid JSON"] += bad_lines.height
        for row in bad_lines.iter_rows(named=True):
            rejected.append({"entity": entity.name, "landing_date": day, "source_file": file_uri,
                             "row_number": row["_row_number"], "reason": row["reason"],
                             "record": row["record"], "quarantined_at": now})
        frame = validate_frame(entity, raw, day).with_columns(
            landing_date=pl.lit(day, dtype=pl.Date), _source_file=pl.lit(file_uri))
        frames.append(frame)
    return (pl.concat(frames) if frames else pl.DataFrame()), rejected


def ingest_days(
    settings: LakehouseSettings,
    days: Sequence[dt.date],
    *,
    entities: Sequence[str] | None = None,
    log: Log | None = None,
) -> IngestReport:
    """Ingest the landing files of `days` into bronze; see the module docstring."""
    log = log or (lambda _msg: None)
    days = sorted(set(days))
    if not days:
        raise ValueError("ingest_days needs at least one day")
    selected = [e for e in ENTITIES if entities is None or e.name in entities]
    opts = settings.storage_options()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    report = IngestReport(days=days, entities={e.name: EntityResult(e.name) for e in selected})
    not_these_days = ~pl.col("landing_date").is_in(days)

    # Phase 1: read + validate everything; nothing is written until every file was readable.
    valid_frames: dict[str, pl.DataFrame] = {}
    rejected: list[dict] = []
    known: dict[str, pl.Series] = {}
    for entity in ENTITIES:
        uri = settings.table_uri("bronze", entity.name)
        if entity not in selected:
            if any(entity.name in e.references.values() for e in selected):
                ids = delta.read(uri, columns=list(entity.key), storage_options=opts)
                known[entity.name] = ids[entity.key[0]] if ids.height else pl.Series(dtype=pl.String)
            continue
        result = report.entities[entity.name]
        frames = []
        for i, day in enumerate(days, start=1):
            frame, rej = _read_entity_day(settings, entity, day, result, now)
            rejected.extend(rej)
            if frame.height:
                frames.append(frame)
            if len(days) > 5 and (i % 10 == 0 or i == len(days)):
                log(f"[ingest] {entity.name}: read {i}/{len(days)} days, {result.rows_read} rows")
        if frames:
            df = pl.concat(frames, how="vertical_relaxed")
        else:
            df = pl.DataFrame(schema={"_row_number": pl.Int64, **{c.name: _PL_TYPES[c.type] for c in entity.columns},
                                      "_reasons": pl.List(pl.String), "_record": pl.String,
                                      "landing_date": pl.Date, "_source_file": pl.String})
        existing = delta.read(uri, columns=list(entity.key) + ["landing_date"], storage_options=opts,
                              where=not_these_days)
        df = _cross_checks(entity, df, known, existing)
        is_ok = pl.col("_reasons").list.len() == 0
        good, bad = df.filter(is_ok), df.filter(~is_ok)
        result.rows_valid = good.height
        result.rows_quarantined += bad.height
        for reasons in bad["_reasons"].to_list():
            for r in reasons:
                result.reasons[r.split(":")[0] + ": " + _reason_kind(r)] += 1
        rejected.extend(
            {"entity": entity.name, "landing_date": r["landing_date"], "source_file": r["_source_file"],
             "row_number": r["_row_number"], "reason": "; ".join(r["_reasons"]), "record": r["_record"],
             "quarantined_at": now}
            for r in bad.select("landing_date", "_source_file", "_row_number", "_reasons", "_record")
            .iter_rows(named=True)
        )
        # ids known to later entities: earlier days in bronze + this batch's valid rows
        if len(entity.key) == 1:
            k = entity.key[0]
            known[entity.name] = pl.concat([existing[k], good[k]]) if existing.height else good[k]
        valid_frames[entity.name] = good
        log(f"[ingest] {entity.name}: {good.height} valid, {bad.height} quarantined")

    empty = [d for d in days if not any(
        f"/{_day_folder(d)}/" in f for r in report.entities.values() for f in r.files)]
    if empty and len(selected) > 1:
        raise MissingLandingError(
            f"no landing files for {', '.join(map(str, empty))} under {settings.landing_uri} "
            f"(expected <entity>/date=YYYY-MM-DD/*.parquet|jsonl); nothing was written")

    # Phase 2: one commit per table.
    predicate = delta.in_predicate("landing_date", days)
    committed: list[str] = []
    for entity in selected:
        good = valid_frames[entity.name]
        table = (good.select([c.name for c in entity.columns] + ["landing_date", "_source_file"])
                 .with_columns(_ingested_at=pl.lit(now, dtype=pl.Datetime("us", "UTC")))
                 .to_arrow().cast(bronze_schema(entity)))
        uri = settings.table_uri("bronze", entity.name)
        with refused_writes_named(uri, committed):
            report.entities[entity.name].version = delta.replace_partitions(
                uri, table, predicate=predicate, partition_by=["landing_date"], storage_options=opts)
        committed.append(f"bronze/{entity.name}")
        log(f"[ingest] wrote bronze/{entity.name}: {table.num_rows} rows "
            f"(version {report.entities[entity.name].version})")
    qtable = pa.Table.from_pylist(rejected, schema=QUARANTINE_SCHEMA)
    qpred = f"{predicate} AND {delta.in_predicate('entity', [e.name for e in selected])}"
    quri = settings.table_uri("bronze", QUARANTINE)
    with refused_writes_named(quri, committed):
        report.quarantine_version = delta.replace_partitions(
            quri, qtable, predicate=qpred, partition_by=["entity", "landing_date"], storage_options=opts)
    log(f"[ingest] wrote bronze/{QUARANTINE}: {qtable.num_rows} rows")
    return report


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: drop the offending value, keep what was expected."""
    body = reason.split(":", 1)[1].strip() if ":" in reason else reason
    for marker in ("expected", "missing", "not one of", "below", "above", "unknown", "duplicate",
                   "is not on", "empty"):
        if marker in body:
            return marker if marker != "expected" else body[body.index("expected"):].split(", got")[0]
    return body[:60]


__all__ = ["IngestReport", "LandingFileError", "MissingLandingError", "StorageNotWritableError",
           "ingest_days", "refused_writes_named", "validate_frame"]
