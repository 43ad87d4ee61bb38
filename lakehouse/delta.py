"""Delta Lake reads and writes through the paths STACK.md found safe.

Writes go through ``deltalake.write_deltalake``; reads through ``polars.read_delta`` (never
``DeltaTable.to_pyarrow_table()``, which can abort the interpreter at exit). Every write of a
day range is one Delta commit (predicate overwrite), so a failed run leaves the previous
version in place and re-running a day replaces exactly that day.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Iterable, Sequence

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError


def table_exists(uri: str, storage_options: dict | None = None) -> bool:
    try:
        DeltaTable(uri, storage_options=storage_options or None)
        return True
    except TableNotFoundError:
        return False


def table_version(uri: str, storage_options: dict | None = None) -> int | None:
    try:
        return DeltaTable(uri, storage_options=storage_options or None).version()
    except TableNotFoundError:
        return None


def _sql_literal(value) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def in_predicate(column: str, values: Iterable) -> str:
    vals = sorted(set(values))
    if not vals:
        raise ValueError("in_predicate needs at least one value")
    return f"{column} IN ({', '.join(_sql_literal(v) for v in vals)})"


def replace_partitions(
    uri: str,
    data: pa.Table | pa.RecordBatchReader,
    *,
    predicate: str,
    partition_by: Sequence[str],
    storage_options: dict | None = None,
    retries: int = 3,
) -> int:
    """Replace the rows matching `predicate` with `data` in one commit; create the table if new.

    Every row of `data` must match `predicate` (deltalake checks it). Returns the new version.
    Concurrent writers to other partitions can make a commit fail; it is retried a few times.
    """
    opts = storage_options or None
    for attempt in range(retries + 1):
        try:
            if not table_exists(uri, opts):
                write_deltalake(uri, data, mode="overwrite", partition_by=list(partition_by),
                                storage_options=opts)
            else:
                write_deltalake(uri, data, mode="overwrite", predicate=predicate,
                                schema_mode="merge", storage_options=opts)
            return DeltaTable(uri, storage_options=opts).version()
        except CommitFailedError:
            if attempt == retries or isinstance(data, pa.RecordBatchReader):
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def overwrite(
    uri: str,
    data: pa.Table | pa.RecordBatchReader,
    *,
    partition_by: Sequence[str] = (),
    storage_options: dict | None = None,
) -> int:
    """Replace the whole table (schema included) in one commit; returns the new version."""
    opts = storage_options or None
    write_deltalake(uri, data, mode="overwrite", schema_mode="overwrite",
                    partition_by=list(partition_by) or None, storage_options=opts)
    return DeltaTable(uri, storage_options=opts).version()


def read(
    uri: str,
    *,
    columns: Sequence[str] | None = None,
    storage_options: dict | None = None,
    where: pl.Expr | None = None,
) -> pl.DataFrame:
    """Read a Delta table (or an empty frame if it does not exist yet) with polars."""
    if not table_exists(uri, storage_options):
        return pl.DataFrame()
    lf = pl.scan_delta(uri, storage_options=storage_options or None)
    if where is not None:
        lf = lf.filter(where)
    if columns is not None:
        lf = lf.select(columns)
    return lf.collect()


def row_count(uri: str, *, storage_options: dict | None = None, where: pl.Expr | None = None) -> int:
    if not table_exists(uri, storage_options):
        return 0
    lf = pl.scan_delta(uri, storage_options=storage_options or None)
    if where is not None:
        lf = lf.filter(where)
    return int(lf.select(pl.len()).collect().item())
