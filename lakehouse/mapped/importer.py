"""Import a "bring your own data" dataset into bronze, as its mapping file describes it.

Reads the interaction files and the optional user/item side tables (CSV, Parquet or JSON Lines;
a local folder or s3://bucket/prefix) and writes three bronze Delta tables:

- ``mapped_interactions`` (partition ``event_date``): each import replaces exactly the days it
  writes, so re-importing is idempotent;
- ``mapped_users`` / ``mapped_items``: the whole snapshot, overwritten on each import (static
  attributes); without a side table, just the ids seen in the interactions.

Two phases, as in :mod:`lakehouse.landing.ingest`: every file is read and checked completely first,
and any problem raises :class:`SourceDataError` naming the file, the column, the mapping field
and an example row (row numbers count data rows from 1, after a CSV header) before anything is
written. Unlike the landing ingest there is no quarantine: a mapping that misreads a column
(wrong unit, wrong column) would quarantine everything, so the user is told to fix the mapping
or the data.

Memory is bounded whatever the size of the source: files are read in batches
(:mod:`lakehouse.mapped.sources`), each batch is checked and typed (:mod:`lakehouse.mapped.checks`)
and staged on local disk; the checks over the whole dataset run on the staged rows out of core
(:mod:`lakehouse.mapped.staging`), and the tables are written from streams
(:mod:`lakehouse.mapped.write`).

``python -m lakehouse.mapped.importer MAPPING`` checks a mapping and its files and writes nothing.
"""

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Sequence

import polars as pl
import pyarrow as pa

from lakehouse.io.errors import refused_writes_named
from lakehouse.io.settings import LakehouseSettings
from lakehouse.mapped.checks import interaction_fields, interactions_batch, side_batch, side_fields
from lakehouse.mapped.mapping import DatasetMapping, SideTable
from lakehouse.mapped.problems import FileChecks, Problem, check_columns, format_row
from lakehouse.mapped.sources import SourceDataError, SourceFile, find_files, open_files
from lakehouse.mapped.staging import INTERACTIONS, ITEMS, USERS, Stage, bronze_schemas, staged_schemas
from lakehouse.mapped.write import replace_days, replace_table

Log = Callable[[str], None]

MAX_PROBLEMS_SHOWN = 12
SIDES = (("users", USERS, "user_id"), ("items", ITEMS, "item_id"))


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


# ---------------------------------------------------------------- phase 1: read, check, stage

def _stage_table(m: DatasetMapping, stage: Stage, table: str, where: str, path: str, fmt: str | None,
                 delimiter: str, fields: dict[str, str], convert: Callable[[FileChecks, pl.DataFrame], pl.DataFrame],
                 result: TableImport, problems: list[Problem], log: Log) -> list[SourceFile]:
    """Read every file of a table batch by batch, check and type each batch, and stage it while
    no problem has been found (after one, the files are still read, to report every problem)."""
    uri = m.uri(path)
    files = open_files(uri, fmt, delimiter, where)
    if not files:
        raise SourceDataError(
            f"no source files found for {where} at {uri} ({where}.path = {path!r} under source "
            f"{m.source}; mapping {m.mapping_path or m.name}); nothing was written")
    for sf in files:
        result.files.append(sf.uri)
        if sf.is_empty():
            log(f"[import] {sf.uri}: empty file, skipped")
            continue
        fc = FileChecks(sf.uri, list(fields))
        columns = sf.columns()  # None for JSON Lines: known after the read
        if columns is not None and not check_columns(fc, columns, fields):
            problems += fc.problems()
            continue
        for batch in sf.batches(list(fields)):
            result.rows_read += batch.height
            frame = convert(fc, batch)
            if not problems and not fc.found_any:
                stage.append(table, frame)
        if columns is None:
            check_columns(fc, sf.seen_columns, fields)
        problems += fc.problems()
    return files


def _duplicates(stage: Stage, side: str, table: str, key: str, t: SideTable,
                files: list[SourceFile]) -> Problem | None:
    """A side-table key on more than one row (in any files), with its first two rows."""
    found = stage.duplicated_key(table, key)
    if found is None:
        return None
    value, count, n_keys, where = found
    shown = list(side_fields(side, t))
    by_uri = {f.uri: f for f in files}
    wanted: dict[str, set[int]] = {}
    for uri, row in where:
        wanted.setdefault(uri, set()).add(row)
    rows = {uri: by_uri[uri].rows(shown, numbers) for uri, numbers in wanted.items()}
    (ua, ra), (ub, rb) = where
    of = "" if ua == ub else f" of {ub}"
    example = f"{format_row(rows[ua][ra], shown)} and {format_row(rows[ub][rb], shown)}{of}"
    return Problem(ua, t.key, f"({side}.key): key {value!r} appears {count} times; each {side[:-1]} "
                              f"needs one row ({n_keys} duplicated key(s))", 0, example)


def _check_heads(m: DatasetMapping, stage: Stage, files: list[str], log: Log) -> None:
    """A mapping whose take values never occur (a typo, another spelling, a wrong threshold)
    would import a dataset without a single positive: stop and show what the column holds."""
    it = m.interactions
    where = f"mapping {m.mapping_path or m.name}"
    if it.event:
        if not stage.take_count():
            listed = ", ".join(f"{v!r} ({n})" for v, n in stage.event_values(10))
            raise SourceDataError(
                f"no interaction is a take: none of interactions.event.take {list(it.event.take)} occurs "
                f"in column {it.event.column!r} of {', '.join(files)}; values found (rows): {listed} "
                f"({where}); nothing was written")
        for head in ("complete", "music_like"):
            declared = getattr(it.event, head)
            seen = stage.values_seen(declared)
            unseen = [v for v in declared if v not in seen]
            if unseen:
                log(f"[import] warning: interactions.event.{head} values {unseen} never occur in column "
                    f"{it.event.column!r}")
    elif it.rating:
        positives, low, high = stage.rating_range(it.rating.positive_threshold)
        if not positives:
            raise SourceDataError(
                f"no interaction is a take: no rating in column {it.rating.column!r} reaches "
                f"interactions.rating.positive_threshold {it.rating.positive_threshold:g} (ratings range "
                f"{low:g} .. {high:g}) ({where}); nothing was written")


def _raise(problems: list[Problem], m: DatasetMapping) -> None:
    shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
    where = m.mapping_path or m.name
    raise SourceDataError(f"{len(problems)} problem(s) in the source data of mapping {where}; nothing "
                          f"was written. Fix the data or the mapping and re-run:\n{shown}{more}")


# ---------------------------------------------------------------- the run

@contextlib.contextmanager
def _system_memory_pool():
    """Arrow's allocations from the system allocator while importing: it returns what a phase
    freed to the OS, where Arrow's default pool (mimalloc) keeps it, so the read's peak and the
    write's would add up. Buffers remember their pool, so switching back is safe."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


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
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    report = ImportReport(dataset=mapping.name, tables={n: TableImport(n) for n in (INTERACTIONS, USERS, ITEMS)})
    with _system_memory_pool(), Stage(settings.data_dir, staged_schemas(mapping)) as stage:
        # Phase 1: read, check and stage every file; nothing is written while a problem is open.
        problems: list[Problem] = []
        _stage_table(mapping, stage, INTERACTIONS, "interactions", it.path, it.format, it.delimiter,
                     interaction_fields(mapping), lambda fc, b: interactions_batch(mapping, fc, b),
                     report.tables[INTERACTIONS], problems, log)
        side_files: dict[str, list[SourceFile]] = {}
        for side, name, key in SIDES:
            t: SideTable | None = getattr(mapping, side)
            if t is not None:
                side_files[side] = _stage_table(
                    mapping, stage, name, side, t.path, t.format, t.delimiter, side_fields(side, t),
                    lambda fc, b, side=side, t=t: side_batch(side, t, fc, b), report.tables[name], problems, log)
        for side, name, key in SIDES:
            if side in side_files and not problems:
                dup = _duplicates(stage, side, name, key, getattr(mapping, side), side_files[side])
                problems += [dup] if dup else []
        if problems:
            _raise(problems, mapping)
        if not stage.rows[INTERACTIONS]:
            raise SourceDataError(f"no interaction rows in {', '.join(report.tables[INTERACTIONS].files)} "
                                  f"(mapping {mapping.mapping_path or mapping.name}); nothing was written")
        _check_heads(mapping, stage, report.tables[INTERACTIONS].files, log)

        # What would be written.
        present = stage.days()
        if days is not None:
            report.days_missing = sorted(set(days) - set(present))
            report.days_written = sorted(set(days) & set(present))
        else:
            report.days_written = present
        selected = stage.count(INTERACTIONS, report.days_written)
        report.rows_outside_days = stage.rows[INTERACTIONS] - selected
        report.event_types = stage.event_types(report.days_written)
        report.tables[INTERACTIONS].rows_written = selected
        for side, name, key in SIDES:
            if getattr(mapping, side) is None:
                report.tables[name].rows_written = stage.distinct(INTERACTIONS, key)
                continue
            report.tables[name].rows_written = stage.rows[name]
            ids, rows = stage.ids_absent(name, key)
            setattr(report, f"{side}_missing", ids)
            setattr(report, f"interactions_missing_{side[:-1]}", rows)
        if dry_run:
            return report

        # Phase 2: interactions (only the days written), then the two snapshots.
        schemas = bronze_schemas(mapping)
        opts = settings.storage_options()
        committed: list[str] = []
        if report.days_written:
            uri = settings.table_uri("bronze", INTERACTIONS)
            with refused_writes_named(uri, committed):
                report.tables[INTERACTIONS].version = replace_days(
                    uri, schemas[INTERACTIONS], report.days_written,
                    lambda day: stage.day_rows(day, schemas[INTERACTIONS], now), storage_options=opts)
            committed.append(f"bronze/{INTERACTIONS}")
            log(f"[import] wrote bronze/{INTERACTIONS}: {selected} rows on {len(report.days_written)} day(s) "
                f"(version {report.tables[INTERACTIONS].version})")
        else:
            report.tables[INTERACTIONS].rows_written = 0
            log(f"[import] none of the requested days has interactions; bronze/{INTERACTIONS} unchanged")
        for side, name, key in SIDES:
            ids_from = None if getattr(mapping, side) else mapping.uri(it.path)
            uri = settings.table_uri("bronze", name)
            with refused_writes_named(uri, committed):
                report.tables[name].version = replace_table(
                    uri, schemas[name], stage.side_stream(name, schemas[name], now, ids_from), storage_options=opts)
            committed.append(f"bronze/{name}")
            log(f"[import] wrote bronze/{name}: {report.tables[name].rows_written} rows "
                f"(version {report.tables[name].version})")
    return report


__all__ = ["INTERACTIONS", "ITEMS", "USERS", "ImportReport", "SourceDataError", "TableImport",
           "find_files", "import_dataset"]


def main(argv: list[str] | None = None) -> int:
    """`python -m lakehouse.mapped.importer MAPPING`: check a mapping and its files, write nothing."""
    import argparse

    from lakehouse.mapped.mapping import MappingError
    from lakehouse.mapped.mapping_file import load_mapping

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
