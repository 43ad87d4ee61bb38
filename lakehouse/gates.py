"""Run quality suites on the rows of a date window of Delta tables (used by the asset checks
and the benchmarks alike)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import polars as pl

from lakehouse import delta
from lakehouse.contract import BY_NAME, ENTITIES
from lakehouse.quality import (
    MAPPED_GOLD_TABLES,
    CheckOutcome,
    SuiteSpec,
    bronze_suite,
    gold_suite,
    mapped_bronze_suite,
    run_suite,
    training_examples_suite,
)
from lakehouse.settings import LakehouseSettings


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


def bronze_suites(dataset: str = "fitness") -> list[TableSuite]:
    if dataset == "mapped":
        return [TableSuite(mapped_bronze_suite(), "bronze", "mapped_interactions", "event_date")]
    return [TableSuite(bronze_suite(e), "bronze", e.name, "landing_date") for e in ENTITIES]


def gold_suites(published: Mapping[str, str], negatives_per_positive: float, layer: str = "gold",
                dataset: str = "fitness") -> list[TableSuite]:
    """Suites for published marts (model -> partition column); a mart without a suite is skipped
    (its dbt tests still guard it)."""
    out = []
    for table, partition_col in published.items():
        try:
            if dataset == "mapped":
                spec = (gold_suite(table, tables=MAPPED_GOLD_TABLES,
                                   negatives_per_positive=negatives_per_positive)
                        if table == "training_examples"
                        else gold_suite(table, tables=MAPPED_GOLD_TABLES))
            else:
                spec = (training_examples_suite(negatives_per_positive) if table == "training_examples"
                        else gold_suite(table))
        except KeyError:
            continue
        out.append(TableSuite(spec, layer, table, partition_col))
    return out


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
    suites = list(suites)
    names = sorted({n for s in suites for n in s.spec.reference_names})
    references = reference_ids(settings, names)
    for suite in suites:
        yield suite, validate_window(settings, suite, start=start, end=end, references=references)
