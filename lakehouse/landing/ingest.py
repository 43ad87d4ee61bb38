"""Bronze ingest: landing files of some days -> bronze Delta tables + quarantine.

Write, audit, publish, so a bad landing loses nothing:
1. verify: each day's manifest (lakehouse.landing.manifest) must be there and match the day's
   files (none missing, none extra, sizes, then rows and sha256 as each file is read);
2. read and validate every file of every requested day (no writes). A file that cannot be read
   at all raises :class:`LandingFileError` naming the file and what was wrong. Rows that break
   the contract (lakehouse.contract: types, ranges, the id grammar, keys, references) are kept
   with their reasons, for the quarantine;
3. audit the staged rows: the bronze suites (lakehouse.quality.suites), `no_shrink` against the rows
   committed for those days, `quarantine_share` (lakehouse.quality.gates). A blocking failure raises
   :class:`AuditFailedError` and nothing is written;
4. one Delta commit per table replaces exactly the requested days (idempotent re-runs), and the
   rejected rows replace those days' rows in the quarantine table.

A re-run whose rows differ from the committed ones reports those days as ``corrected_days``:
later days' features depend on them (see orchestration.sensors.correction_sensor).

Files are read by :mod:`lakehouse.landing.read` and typed and checked by
:mod:`lakehouse.landing.validate`; this module runs the phases.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import polars as pl
import pyarrow as pa

from lakehouse.contract import ENTITIES, QUARANTINE_SCHEMA, Entity, bronze_schema
from lakehouse.io import delta
from lakehouse.io.errors import refused_writes_named
from lakehouse.io.settings import LakehouseSettings
from lakehouse.io.storage import filesystem_for, join_uri
from lakehouse.landing.manifest import (
    SUPPORTED,
    DayManifest,
    ManifestError,
    day_listing,
    read_manifest,
    verify_file,
    verify_listing,
)
from lakehouse.landing.read import LandingFileError, landing_files, read_bytes, read_jsonl, read_parquet
from lakehouse.landing.validate import PL_TYPES, cross_checks, validate_frame
from lakehouse.quality.checks import CheckOutcome, blocking_failures
from lakehouse.quality.engine import warm_up_in_background
from lakehouse.quality.gates import (
    MAX_QUARANTINE_SHARE,
    MIN_KEPT_RATIO,
    AuditFailedError,
    audit_frame,
    bronze_suites,
    no_shrink,
    quarantine_share,
)

Log = Callable[[str], None]
QUARANTINE = "quarantine"


class MissingLandingError(LandingFileError):
    """A requested day has no landing files at all (not landed yet, or expired): replacing its
    bronze rows with nothing would lose data, so the run stops and changes nothing."""


class LandingManifestError(LandingFileError, ManifestError):
    """A day's files disagree with its manifest (missing, extra, truncated, miscounted, changed),
    or the manifest is missing: the run stops before writing anything, naming each difference."""


@dataclass(frozen=True)
class AuditSettings:
    """How strict the audit before a commit is (the run config of the ingest step)."""

    allow_shrink: bool = False
    min_kept_ratio: float = MIN_KEPT_RATIO
    max_quarantine_share: float = MAX_QUARANTINE_SHARE


@dataclass
class EntityResult:
    entity: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    version: int | None = None
    rows_replaced: int = 0  # committed rows of these days before the commit
    corrected_days: list[dt.date] = field(default_factory=list)  # committed days whose rows changed
    checks: list[CheckOutcome] = field(default_factory=list)  # the audit, before the commit


@dataclass
class IngestReport:
    days: list[dt.date]
    entities: dict[str, EntityResult]
    quarantine_version: int | None = None

    @property
    def rows_quarantined(self) -> int:
        return sum(r.rows_quarantined for r in self.entities.values())

    @property
    def corrected_days(self) -> list[dt.date]:
        return sorted({d for r in self.entities.values() for d in r.corrected_days})

    def summary(self) -> str:
        lines = [f"ingested {len(self.days)} day(s): {self.days[0]} .. {self.days[-1]}"]
        for r in self.entities.values():
            lines.append(
                f"  {r.entity:<12} files={len(r.files):<4} read={r.rows_read:<9} "
                f"valid={r.rows_valid:<9} quarantined={r.rows_quarantined}"
            )
            for reason, n in r.reasons.most_common(5):
                lines.append(f"      {n} x {reason}")
            if r.corrected_days:
                lines.append(f"      corrected committed day(s): {', '.join(map(str, r.corrected_days))} "
                             f"({r.rows_replaced} rows replaced)")
        return "\n".join(lines)


# ---------------------------------------------------------------- the run

def _read_entity_day(settings, entity: Entity, day: dt.date, result: EntityResult, now: dt.datetime,
                     manifest: DayManifest, problems: list[str]) -> tuple[pl.DataFrame, list[dict]]:
    """Read and validate one entity's files of one day; differences with the manifest (rows,
    sha256) go to `problems` (the caller raises once, naming all of them)."""
    fs, uri, root, infos = landing_files(settings, entity.name, day)
    landing_root = filesystem_for(settings.landing_uri)[1]
    frames, rejected = [], []
    for info in infos:
        file_uri = join_uri(uri, info.path[len(root):]) if info.path.startswith(root) else info.path
        name = info.base_name.lower()
        if not name.endswith(SUPPORTED):
            raise LandingFileError(f"{file_uri}: unsupported file type, expected one of {SUPPORTED}")
        body = read_bytes(fs, info.path, file_uri)
        if name.endswith(".parquet"):
            raw, bad_lines = read_parquet(body, file_uri), pl.DataFrame()
            raw = raw.with_row_index("_row_number", offset=1)
        else:
            raw, bad_lines = read_jsonl(body, file_uri, entity)
        listed = manifest.files.get(info.path[len(landing_root):].lstrip("/"))
        if listed is not None:  # an unlisted file was already reported by verify_listing
            problems += verify_file(listed, rows=raw.height + bad_lines.height,
                                    sha256=hashlib.sha256(body).hexdigest(), uri=file_uri)
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


def verified_manifests(settings: LakehouseSettings, days: Sequence[dt.date]) -> dict[dt.date, DayManifest]:
    """Each day's manifest, checked against the day's files (presence, extras, sizes); raises
    LandingManifestError naming every difference of every day, before anything is read."""
    names = [e.name for e in ENTITIES]
    out, problems, no_files = {}, [], []
    for day in days:
        listing = day_listing(settings.landing_uri, day, names)
        try:
            manifest = read_manifest(settings.landing_uri, day)
        except ManifestError as exc:
            problems.append(f"{day}: {exc}")
            continue
        if manifest is None:
            if not listing:
                no_files.append(day)
            else:
                problems.append(f"{day}: no manifest at {settings.landing_uri}/_manifests/date={day}.json "
                                f"({len(listing)} files landed): the exporter writes it last, listing every "
                                "file with its rows and sha256 or size; the day is not complete yet")
            continue
        problems += [f"{day}: {p}" for p in verify_listing(manifest, listing, names, settings.landing_uri)]
        out[day] = manifest
    if no_files:
        raise MissingLandingError(
            f"no landing files for {', '.join(map(str, no_files))} under {settings.landing_uri} "
            f"(expected <entity>/date=YYYY-MM-DD/*.parquet|jsonl and _manifests/date=YYYY-MM-DD.json); "
            "nothing was written")
    if problems:
        raise LandingManifestError("the landing files do not match their manifest, nothing was written:\n  "
                                   + "\n  ".join(problems))
    return out


def _day_counts(df: pl.DataFrame, col: str = "landing_date") -> dict[dt.date, int]:
    if not df.height:
        return {}
    return dict(df.group_by(col).len().iter_rows())


def _committed_digests(uri: str, entity: Entity, days: Sequence[dt.date], opts: dict) -> dict[dt.date, tuple[int, int]]:
    """day -> (rows, digest of the rows' contract columns) of what bronze holds for `days`."""
    if not delta.table_exists(uri, opts):
        return {}
    cols = [c.name for c in entity.columns]
    df = (pl.scan_delta(uri, storage_options=opts or None)
          .filter(pl.col("landing_date").is_in(days)).select(["landing_date", *cols]).collect())
    return _digests(df, entity)


def _digests(df: pl.DataFrame, entity: Entity) -> dict[dt.date, tuple[int, int]]:
    """day -> (rows, order-free digest of the contract columns); equal digests: same rows."""
    if not df.height:
        return {}
    cols = [c.name for c in entity.columns]
    schema = {c.name: PL_TYPES[c.type] for c in entity.columns}
    h = df.select(pl.col("landing_date"), pl.struct([pl.col(c).cast(schema[c]) for c in cols])
                  .hash(seed=17).alias("_h"))
    agg = h.group_by("landing_date").agg(pl.len().alias("n"), (pl.col("_h") % 1_000_000_007).sum().alias("d"))
    return {r[0]: (r[1], r[2]) for r in agg.iter_rows()}


def ingest_days(
    settings: LakehouseSettings,
    days: Sequence[dt.date],
    *,
    entities: Sequence[str] | None = None,
    log: Log | None = None,
    audit: AuditSettings = AuditSettings(),
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

    # Phase 1: verify each day against its manifest, then read + validate everything; nothing
    # is written until every file was readable and matched its manifest.
    warm_up_in_background()  # the audit's GX imports while the files are read
    manifests = verified_manifests(settings, days)
    problems: list[str] = []
    valid_frames: dict[str, pl.DataFrame] = {}
    rejected: list[dict] = []
    known: dict[str, pl.Series] = {}
    existing_counts: dict[str, dict] = {}
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
            frame, rej = _read_entity_day(settings, entity, day, result, now, manifests[day], problems)
            rejected.extend(rej)
            if frame.height:
                frames.append(frame)
            if len(days) > 5 and (i % 10 == 0 or i == len(days)):
                log(f"[ingest] {entity.name}: read {i}/{len(days)} days, {result.rows_read} rows")
        if frames:
            df = pl.concat(frames, how="vertical_relaxed")
        else:
            df = pl.DataFrame(schema={"_row_number": pl.Int64, **{c.name: PL_TYPES[c.type] for c in entity.columns},
                                      "_reasons": pl.List(pl.String), "_record": pl.String,
                                      "landing_date": pl.Date, "_source_file": pl.String})
        existing = delta.read(uri, columns=list(entity.key) + ["landing_date"], storage_options=opts,
                              where=not_these_days)
        existing_counts[entity.name] = _day_counts(existing)
        df = cross_checks(entity, df, known, existing)
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
    if problems:
        raise LandingManifestError("the landing files do not match their manifest, nothing was written:\n  "
                                   + "\n  ".join(problems))

    # Phase 2: audit the staged rows against what is committed; a blocking failure writes nothing.
    rejected_per_day: dict[str, Counter] = {e.name: Counter() for e in selected}
    examples: dict[str, str] = {}
    for r in rejected:
        rejected_per_day[r["entity"]][r["landing_date"]] += 1
        examples.setdefault(r["entity"], f"{r['source_file']} row {r['row_number']}: {r['reason'][:200]}")
    _audit(settings, selected, days, valid_frames, report, rejected_per_day, examples, existing_counts, known,
           audit, log)

    # Phase 3: one commit per table.
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


def _audit(settings, selected, days, valid_frames, report, rejected_per_day, examples, existing_counts, known,
           audit: AuditSettings, log: Log) -> None:
    """The bronze suites, no_shrink and quarantine_share on the staged rows (before any commit);
    also finds the committed days whose rows this run changes (corrected days)."""
    opts = settings.storage_options()
    suites = {s.table: s for s in bronze_suites()}
    references = {name: ids.to_arrow() for name, ids in known.items()}  # no Python object per id
    span = len(days)
    outcomes: dict[str, list[CheckOutcome]] = {}
    for entity in selected:
        result = report.entities[entity.name]
        good = valid_frames[entity.name]
        uri = settings.table_uri("bronze", entity.name)
        before = _committed_digests(uri, entity, days, opts)
        after = _digests(good, entity)
        result.rows_replaced = sum(n for n, _ in before.values())
        result.corrected_days = sorted(d for d in before if before[d] != after.get(d, (0, 0)))
        # the row volume is compared with the window of the same length just before the run's
        prev_days = {days[0] - dt.timedelta(days=i) for i in range(1, span + 1)}
        previous = sum(n for d, n in existing_counts[entity.name].items() if d in prev_days)
        checks = audit_frame(suites[entity.name], good.drop("_reasons", "_record", strict=False),
                             previous_rows=previous, references=references)
        table = suites[entity.name].spec.table
        checks.append(no_shrink(table, {d: n for d, (n, _) in before.items()}, _day_counts(good),
                                allow=audit.allow_shrink, min_ratio=audit.min_kept_ratio))
        read = {d: n + rejected_per_day[entity.name].get(d, 0) for d, n in _day_counts(good).items()}
        for d, n in rejected_per_day[entity.name].items():
            read.setdefault(d, n)
        checks.append(quarantine_share(table, read, rejected_per_day[entity.name], result.reasons,
                                       max_share=audit.max_quarantine_share,
                                       example=examples.get(entity.name)))
        result.checks = checks
        outcomes[entity.name] = checks
        failed = [o.name for o in blocking_failures(checks)]
        log(f"[ingest] audit bronze/{entity.name}: {'FAILED ' + ', '.join(failed) if failed else 'passed'}")
    if any(blocking_failures(o) for o in outcomes.values()):
        raise AuditFailedError(outcomes)


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: drop the offending value, keep what was expected."""
    body = reason.split(":", 1)[1].strip() if ":" in reason else reason
    for marker in ("missing column", "not a valid id", "finite number", "expected", "missing",
                   "not one of", "below", "above", "unknown", "duplicate", "is not on", "empty"):
        if marker in body:
            if marker == "expected":
                return body[body.index("expected"):].split(", got")[0]
            return "expected a finite number" if marker == "finite number" else marker
    return body[:60]


__all__ = ["AuditSettings", "EntityResult", "IngestReport", "LandingManifestError", "MissingLandingError",
           "QUARANTINE", "ingest_days", "verified_manifests"]
