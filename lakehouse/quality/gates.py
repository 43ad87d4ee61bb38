"""Quality gates: run suites on rows before they are committed (write-audit-publish), or on a
date window of a committed Delta table (the benchmarks).

Besides the Great Expectations suites of ``lakehouse.quality.suites``, two audits guard a commit that
REPLACES days: ``no_shrink`` (a re-run must not replace a day's committed rows with far fewer
unless the run says ``allow_shrink``) and, for bronze, ``quarantine_share`` (a day whose rows
are mostly rejected is a broken export, not a quiet day). Both are plain Python, blocking, and
reported like any other check."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Hashable, Iterable, Iterator, Mapping, TypeVar

import polars as pl

from lakehouse.contract import BY_NAME, ENTITIES
from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from lakehouse.publish import PublishSpec, stage
from lakehouse.quality.checks import CheckOutcome, SuiteSpec, blocking_failures, format_failures
from lakehouse.quality.config import GOLD_TABLES
from lakehouse.quality.engine import run_suite, warm_up_in_background
from lakehouse.quality.suites import bronze_suite, gold_suite, mapped_bronze_suite


# A re-run may replace a day's committed rows with fewer, down to this share of them, without an
# explicit allow_shrink (a late correction removes a few rows; a lost file removes most).
MIN_KEPT_RATIO = 0.5
# A day of an entity whose rejected share of rows is above this fails the bronze audit.
MAX_QUARANTINE_SHARE = 0.5
NO_SHRINK, QUARANTINE_SHARE = "no_shrink", "quarantine_share"
# (name, description) of the audits every replacing commit runs; blocking.
REPLACE_AUDITS = (
    (NO_SHRINK, "a re-run keeps at least the configured share of each day's committed rows "
                "(allow_shrink in the run config to replace them with fewer)"),
)
BRONZE_AUDITS = REPLACE_AUDITS + (
    (QUARANTINE_SHARE, "at most the configured share of a day's landed rows is quarantined"),
)


class AuditFailedError(RuntimeError):
    """Blocking checks failed on rows staged for a commit: nothing was committed, every table
    keeps its previous version. ``outcomes`` holds every check of every audited table."""

    def __init__(self, outcomes: Mapping[str, list[CheckOutcome]]):
        self.outcomes = dict(outcomes)
        failed = [o for outs in self.outcomes.values() for o in blocking_failures(outs)]
        super().__init__(
            f"blocking checks failed, nothing was committed ({', '.join(f'{o.table}:{o.name}' for o in failed)}):\n"
            + format_failures(failed))


def no_shrink(table: str, committed: Mapping[dt.date, int], new: Mapping[dt.date, int], *,
              allow: bool = False, min_ratio: float = MIN_KEPT_RATIO) -> CheckOutcome:
    """Days whose committed rows would be replaced by fewer than `min_ratio` of them."""
    shrunk = {d: (n, new.get(d, 0)) for d, n in sorted(committed.items())
              if n > 0 and new.get(d, 0) < min_ratio * n}
    meta = {"min_ratio": min_ratio, "allow_shrink": allow,
            "days": {str(d): {"committed": c, "new": m} for d, (c, m) in shrunk.items()}}
    if not shrunk:
        desc = f"{table}: check '{NO_SHRINK}' passed (no committed day shrinks below {min_ratio:.0%})"
        return CheckOutcome(NO_SHRINK, True, "ERROR", desc, meta, table, True)
    days = ", ".join(f"{d}: {c} committed rows -> {m}" for d, (c, m) in list(shrunk.items())[:5])
    if allow:
        return CheckOutcome(NO_SHRINK, True, "ERROR", f"{table}: check '{NO_SHRINK}' passed: shrinks "
                            f"({days}), allowed by allow_shrink in the run config", meta, table, True)
    return CheckOutcome(
        NO_SHRINK, False, "ERROR",
        f"{table}: check '{NO_SHRINK}' FAILED (blocking): this run would replace committed rows "
        f"with far fewer ({days}; under "
        f"{min_ratio:.0%}). Nothing was committed. If the smaller day is right, re-run with "
        "allow_shrink: true in the step's run config.", meta, table, True)


def quarantine_share(table: str, read: Mapping[dt.date, int], quarantined: Mapping[dt.date, int],
                     reasons: Mapping[str, int], *, max_share: float = MAX_QUARANTINE_SHARE,
                     example: str | None = None) -> CheckOutcome:
    """Days where more than `max_share` of the landed rows were rejected; `example` names one
    rejected row (file, row number, reason)."""
    bad = {d: (quarantined.get(d, 0), n) for d, n in sorted(read.items())
           if n > 0 and quarantined.get(d, 0) > max_share * n}
    top = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])
    meta = {"max_share": max_share, "reasons": top, "example": example,
            "days": {str(d): {"quarantined": q, "read": n} for d, (q, n) in bad.items()}}
    if not bad:
        return CheckOutcome(QUARANTINE_SHARE, True, "ERROR",
                            f"{table}: check '{QUARANTINE_SHARE}' passed (at most {max_share:.0%} "
                            "of each day's rows quarantined)", meta, table, True)
    days = ", ".join(f"{d}: {q} of {n} rows" for d, (q, n) in list(bad.items())[:5])
    why = "; ".join(f"{n} x {r}" for r, n in top.items())
    return CheckOutcome(
        QUARANTINE_SHARE, False, "ERROR",
        f"{table}: check '{QUARANTINE_SHARE}' FAILED (blocking): most rows were rejected ({days}) "
        f"- a broken export, not a quiet day. Reasons: {why}."
        + (f" For example {example}." if example else "")
        + " The rows are in bronze/quarantine; nothing was committed.", meta, table, True)


def audit_frame(suite: TableSuite, df, *, previous_rows: int | None,
                references: Mapping | None = None) -> list[CheckOutcome]:
    """The suite on rows staged for a commit (a polars or pandas frame)."""
    return run_suite(suite.spec, df, reference=references or {}, previous_row_count=previous_rows or None)


K = TypeVar("K", bound=Hashable)


def stage_and_audit(settings: LakehouseSettings, specs: Mapping[K, PublishSpec], suites: Mapping[K, "TableSuite"], *,
                    start: dt.date, end: dt.date, allow_shrink: bool = False,
                    min_kept_ratio: float = MIN_KEPT_RATIO) -> tuple[dict, dict[K, list[CheckOutcome]]]:
    """Write-audit-publish up to the commit: each spec's rows for start..end staged from the
    DuckDB working file (`lakehouse.publish.stage`) and audited (`audit_staged`; `suites` by the
    same keys, a key without one gets `no_shrink` only). Nothing is committed. GX imports on a
    thread meanwhile. The publish step and the lakehouse benchmark both run this."""
    warm_up_in_background()
    references = reference_ids(settings, sorted({n for s in suites.values() for n in s.spec.reference_names}))
    staged, outcomes = {}, {}
    for key, spec in specs.items():
        staged[key] = stage(settings, spec, start=start, end=end)
        outcomes[key] = audit_staged(settings, spec, suites.get(key), staged[key], start=start, end=end,
                                     references=references, allow_shrink=allow_shrink,
                                     min_kept_ratio=min_kept_ratio)
    return staged, outcomes


def audit_staged(settings: LakehouseSettings, spec: PublishSpec, suite: "TableSuite | None", staged, *,
                 start: dt.date, end: dt.date, references: Mapping | None = None, allow_shrink: bool = False,
                 min_kept_ratio: float = MIN_KEPT_RATIO) -> list[CheckOutcome]:
    """The audit of a gold commit (write-audit-publish), on the rows `lakehouse.publish.stage`
    read for start..end: the table's suite (None: no suite), then `no_shrink` against the rows
    committed for the same days."""
    uri, opts = settings.table_uri(spec.layer, spec.model), settings.storage_options()
    new = pl.from_arrow(staged) if staged.num_rows else pl.DataFrame(schema={spec.partition_by: pl.Date})
    col = pl.col(spec.partition_by)
    committed = delta.read(uri, columns=[spec.partition_by], storage_options=opts, where=col.is_between(start, end))
    outcomes = []
    if suite is not None:
        span = (end - start).days + 1
        previous = delta.row_count(uri, storage_options=opts, where=col.is_between(
            start - dt.timedelta(days=span), start - dt.timedelta(days=1)))
        outcomes += audit_frame(suite, new, previous_rows=previous, references=references)
    outcomes.append(no_shrink(spec.model, _per_day(committed, spec.partition_by), _per_day(new, spec.partition_by),
                              allow=allow_shrink, min_ratio=min_kept_ratio))
    return outcomes


def _per_day(df: pl.DataFrame, col: str) -> dict[dt.date, int]:
    return dict(df.group_by(col).len().iter_rows()) if df.height else {}


@dataclass(frozen=True)
class TableSuite:
    """A suite and the Delta table (layer/table, partitioned by partition_col) it validates."""

    spec: SuiteSpec
    layer: str
    table: str
    partition_col: str


@dataclass
class GateResult:
    table: str
    start: dt.date
    end: dt.date
    rows: int
    previous_rows: int
    outcomes: list[CheckOutcome]


def bronze_suites() -> list[TableSuite]:
    """The suites of the landing zone's bronze tables (the simulator's entities)."""
    return [TableSuite(bronze_suite(e), "bronze", e.name, "landing_date") for e in ENTITIES]


def mapped_bronze_suites() -> list[TableSuite]:
    """The suite of a mapped import's committed interactions."""
    return [TableSuite(mapped_bronze_suite(), "bronze", "mapped_interactions", "event_date")]


def gold_suites(published: Mapping[str, str], negatives_per_positive: float, layer: str = "gold",
                tables: Mapping[str, Mapping] = GOLD_TABLES) -> list[TableSuite]:
    """Suites for published marts (model -> partition column): what dbt's tests of the marts
    cannot say (``tables``: ``lakehouse.quality.config.GOLD_TABLES``, or ``MAPPED_GOLD_TABLES``
    for a mapped dataset; which is the dataset's, ``ml.datasets``).
    A mart without a suite is skipped: its dbt tests, which fail ``dbt build`` before anything is
    published, and the no_shrink audit guard it."""
    return [TableSuite(gold_suite(table, tables=tables, negatives_per_positive=negatives_per_positive),
                       layer, table, partition_col)
            for table, partition_col in published.items() if table in tables]


def reference_ids(settings: LakehouseSettings, names: Iterable[str]) -> dict:
    """Known ids per referenced entity, from its bronze table."""
    out = {}
    for name in names:
        key = BY_NAME[name].key[0]
        ids = delta.read(settings.table_uri("bronze", name), columns=[key],
                         storage_options=settings.storage_options())
        out[name] = ids[key].to_numpy() if ids.height else []
    return out


def validate_window(
    settings: LakehouseSettings,
    suite: TableSuite,
    *,
    start: dt.date,
    end: dt.date,
    references: Mapping | None = None,
) -> GateResult:
    """Validate the rows whose partition column lies in start..end; row volume is compared with
    the window of the same length just before it. `references` (ids per entity) are read from
    bronze when not given."""
    uri, opts = settings.table_uri(suite.layer, suite.table), settings.storage_options()
    col = pl.col(suite.partition_col)
    df = delta.read(uri, storage_options=opts, where=col.is_between(start, end)).to_pandas()
    span = (end - start).days + 1
    previous = delta.row_count(
        uri, storage_options=opts,
        where=col.is_between(start - dt.timedelta(days=span), start - dt.timedelta(days=1)))
    if references is None:
        references = reference_ids(settings, suite.spec.reference_names)
    outcomes = run_suite(suite.spec, df, reference=references, previous_row_count=previous or None)
    return GateResult(table=f"{suite.layer}/{suite.table}", start=start, end=end, rows=len(df),
                      previous_rows=previous, outcomes=outcomes)


def validate_tables(
    settings: LakehouseSettings, suites: Iterable[TableSuite], *, start: dt.date, end: dt.date
) -> Iterator[tuple[TableSuite, GateResult]]:
    """Validate several tables, reading each referenced entity's ids once for all of them."""
    warm_up_in_background()  # GX imports while the tables are read
    suites = list(suites)
    names = sorted({n for s in suites for n in s.spec.reference_names})
    references = reference_ids(settings, names)
    for suite in suites:
        yield suite, validate_window(settings, suite, start=start, end=end, references=references)
