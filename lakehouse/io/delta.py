"""Delta Lake reads and writes through the paths docs/stack.md found safe.

Writes go through ``deltalake.write_deltalake``; reads through ``polars.scan_delta`` (never
``DeltaTable.to_pyarrow_table()``, which can abort the interpreter at exit). Every write of a
day range is one Delta commit (predicate overwrite), so a failed run leaves the previous
version in place and re-running a day replaces exactly that day.

Concurrent writers (tests/faults/test_concurrent_writes.py): a table is first created empty, on
its own, because two writers that both create a table with data both commit (one copy each);
a predicate overwrite of an existing table is conflict-checked, and the loser of a conflict
retries, which is safe because a replace is idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import time
from typing import Iterable, Mapping, Sequence

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

log = logging.getLogger(__name__)

# object_store client options for S3 writes, from the environment (names verified with deltalake
# 1.6.6, which silently ignores unknown keys). Unset ones keep object_store's defaults: 10
# retries, 30 s per request, 5 s to connect. The retry window is cut from 180 s to 60 s: the
# run-level retry (operations/, the failure sensor) heals longer outages without holding a step for minutes.
S3_CLIENT_ENV: dict[str, tuple[str, str | None]] = {
    "max_retries": ("LAKEHOUSE_S3_MAX_RETRIES", None),
    "retry_timeout": ("LAKEHOUSE_S3_RETRY_TIMEOUT", "60s"),
    "timeout": ("LAKEHOUSE_S3_TIMEOUT", None),
    "connect_timeout": ("LAKEHOUSE_S3_CONNECT_TIMEOUT", None),
}

# Commit-conflict retries: a replace is idempotent, so the loser re-runs it on the new snapshot.
COMMIT_RETRIES = 6
COMMIT_BACKOFF_S = 0.1  # doubled per attempt, with jitter so racing writers drift apart

# CommitFailedError messages that mean another writer committed first (delta-rs 1.x texts).
_CONFLICT = re.compile(r"concurrent|changed since last commit|existing table version|commit attempts",
                       re.IGNORECASE)


class ConcurrentWriteError(CommitFailedError):
    """A write kept losing to conflicting concurrent writes of the same table, or could not be
    re-sent after losing once (streamed data)."""


def delta_options(uri: str, storage_options: Mapping[str, str] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """deltalake storage options: for S3, the given ones plus the client retry/timeout settings."""
    opts = dict(storage_options or {})
    if uri.startswith("s3://"):
        env = os.environ if environ is None else environ
        for key, (var, default) in S3_CLIENT_ENV.items():
            value = env.get(var) or default
            if value and key not in opts:
                opts[key] = value
    return opts or None


def table_exists(uri: str, storage_options: dict | None = None) -> bool:
    try:
        DeltaTable(uri, storage_options=delta_options(uri, storage_options))
        return True
    except TableNotFoundError:
        return False


def table_version(uri: str, storage_options: dict | None = None) -> int | None:
    try:
        return DeltaTable(uri, storage_options=delta_options(uri, storage_options)).version()
    except TableNotFoundError:
        return None


def partition_values(uri: str, column: str, storage_options: dict | None = None) -> list[str]:
    """The values of a partition column present in the table, from its log (no data read)."""
    try:
        dt_ = DeltaTable(uri, storage_options=delta_options(uri, storage_options))
    except TableNotFoundError:
        return []
    return sorted({p[column] for p in dt_.partitions() if p.get(column) is not None})


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


def is_conflict(exc: BaseException) -> bool:
    """Did this commit fail because another writer committed first?"""
    return isinstance(exc, CommitFailedError) and bool(_CONFLICT.search(str(exc)))


def _ensure_table(uri: str, schema: pa.Schema, partition_by: Sequence[str], opts: dict | None) -> None:
    """Create the table empty if it does not exist. Racing creators are harmless: each commits
    only metadata, or loses with a commit error after which the table exists."""
    if table_exists(uri, opts):
        return
    try:
        DeltaTable.create(uri, schema=schema, partition_by=list(partition_by) or None, mode="ignore",
                          storage_options=opts)
    except CommitFailedError:
        if not table_exists(uri, opts):
            raise


def _write_with_retries(uri: str, data, write, opts: dict | None, retries: int) -> int:
    """Run `write()` until it commits; on a lost commit conflict retry (if `data` can be re-sent)
    with backoff. Returns the table version after the commit."""
    replayable = isinstance(data, (pa.Table, pa.RecordBatch))
    for attempt in range(retries + 1):
        try:
            write()
            return DeltaTable(uri, storage_options=opts).version()
        except CommitFailedError as exc:
            if not is_conflict(exc):
                raise
            if not replayable:
                raise ConcurrentWriteError(
                    f"{uri}: commit lost to a conflicting concurrent write of the same table, and the "
                    f"data was a stream that cannot be re-sent: re-run the step ({exc})") from exc
            if attempt == retries:
                raise ConcurrentWriteError(
                    f"{uri}: commit lost to a conflicting concurrent write of the same table "
                    f"{retries + 1} times; gave up ({exc})") from exc
            log.warning("%s: commit lost to a concurrent write (attempt %d of %d), retrying: %s",
                        uri, attempt + 1, retries + 1, str(exc).splitlines()[0])
            time.sleep(COMMIT_BACKOFF_S * 2**attempt * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def replace_partitions(
    uri: str,
    data: pa.Table | pa.RecordBatchReader,
    *,
    predicate: str,
    partition_by: Sequence[str],
    storage_options: dict | None = None,
    retries: int = COMMIT_RETRIES,
) -> int:
    """Replace the rows matching `predicate` with `data` in one commit; create the table if new.

    Every row of `data` must match `predicate` (deltalake checks it). Returns the new version.
    A commit that loses to a concurrent writer is retried on the new snapshot (a pa.Table only:
    a RecordBatchReader is consumed by the first try, so it raises ConcurrentWriteError).
    """
    opts = delta_options(uri, storage_options)

    def write() -> None:
        _ensure_table(uri, data.schema, partition_by, opts)
        write_deltalake(uri, data, mode="overwrite", predicate=predicate, schema_mode="merge",
                        storage_options=opts)

    return _write_with_retries(uri, data, write, opts, retries)


def overwrite(
    uri: str,
    data: pa.Table | pa.RecordBatchReader,
    *,
    partition_by: Sequence[str] = (),
    storage_options: dict | None = None,
    retries: int = COMMIT_RETRIES,
) -> int:
    """Replace the whole table (schema included) in one commit; returns the new version."""
    opts = delta_options(uri, storage_options)

    def write() -> None:
        _ensure_table(uri, data.schema, partition_by, opts)
        write_deltalake(uri, data, mode="overwrite", schema_mode="overwrite",
                        partition_by=list(partition_by) or None, storage_options=opts)

    return _write_with_retries(uri, data, write, opts, retries)


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
