"""Run a quality suite on the rows of a date window of a Delta table (used by the asset checks
and the benchmarks alike)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from lakehouse import delta
from lakehouse.contract import BY_NAME
from lakehouse.quality import CheckOutcome, SuiteSpec, run_suite
from lakehouse.settings import LakehouseSettings


@dataclass
class GateResult:
    table: str
    start: dt.date
    end: dt.date
    rows: int
    previous_rows: int
    outcomes: list[CheckOutcome]


def reference_ids(settings: LakehouseSettings, names) -> dict:
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
    spec: SuiteSpec,
    *,
    layer: str,
    table: str,
    partition_col: str,
    start: dt.date,
    end: dt.date,
) -> GateResult:
    """Validate the rows whose `partition_col` lies in start..end; row volume is compared with
    the window of the same length just before it."""
    uri, opts = settings.table_uri(layer, table), settings.storage_options()
    col = pl.col(partition_col)
    df = delta.read(uri, storage_options=opts, where=col.is_between(start, end)).to_pandas()
    span = (end - start).days + 1
    previous = delta.row_count(
        uri, storage_options=opts,
        where=col.is_between(start - dt.timedelta(days=span), start - dt.timedelta(days=1)))
    outcomes = run_suite(spec, df, reference=reference_ids(settings, spec.reference_names),
                         previous_row_count=previous or None)
    return GateResult(table=f"{layer}/{table}", start=start, end=end, rows=len(df),
                      previous_rows=previous, outcomes=outcomes)
