"""Writing a mapped import's bronze tables to Delta from streams, in bounded memory, one commit
per table.

deltalake's writer (``write_deltalake``, behind ``lakehouse.io.delta``) keeps an open file per
partition in memory until the end of the write: a stream over 30 days held most of the import
in memory, and capping its buffers made small, barely compressed files. Here the data files are
written one at a time with pyarrow, each streamed to storage row group by row group (a day's
rows, then the next day's), and then committed together as one Delta transaction
(``DeltaTable.create_write_transaction``): ``overwrite`` of exactly the days written, or of the
whole table. Until that commit, readers see the previous version; files of a failed write are
not in the log (``VACUUM`` removes them).

The table's schema becomes the union of its schema and the new one (as ``schema_mode="merge"``:
a column that an earlier mapping had is kept, null in the new rows). A commit that loses to a
concurrent writer of the same table is retried on the new snapshot with the same files, as
``lakehouse.io.delta`` retries its writes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
import uuid
from typing import Callable, Iterable, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction

from lakehouse.io import delta
from lakehouse.io.storage import filesystem_for

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 65_536  # rows buffered before a row group is written
FILE_ROWS = 4_194_304  # a data file is closed after this many rows (a day may need several)


def _file_schema(schema: pa.Schema, partition_by: Sequence[str]) -> pa.Schema:
    """Data files hold every column but the partition columns (their values are in the log)."""
    return pa.schema([f for f in schema if f.name not in partition_by])


class _FileWriter:
    """Data files of one partition (or of an unpartitioned table), written from batches."""

    def __init__(self, fs, root: str, folder: str, schema: pa.Schema, partition_values: dict[str, str]):
        self.fs, self.root, self.folder, self.schema = fs, root, folder, schema
        self.partition_values = partition_values
        self.actions: list[AddAction] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._path = ""
        self._rows = 0
        self._nulls: dict[str, int] = {}

    def write(self, batch: pa.RecordBatch) -> None:
        batch = batch.select(self.schema.names).cast(self.schema)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._pending, self._pending_rows = [], 0
        if self._writer is None:
            name = f"part-{len(self.actions):05d}-{uuid.uuid4()}-c000.snappy.parquet"
            self._path = f"{self.folder}/{name}" if self.folder else name
            if isinstance(self.fs, pafs.LocalFileSystem):  # object stores have no folders to make
                self.fs.create_dir(f"{self.root}/{self.folder}".rstrip("/"), recursive=True)
            self._stream = self.fs.open_output_stream(f"{self.root}/{self._path}")
            self._writer = pq.ParquetWriter(self._stream, self.schema, compression="snappy")
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._rows += table.num_rows
        for name in self.schema.names:
            self._nulls[name] = self._nulls.get(name, 0) + table.column(name).null_count
        if self._rows >= FILE_ROWS:
            self._close_file()

    def _close_file(self) -> None:
        self._writer.close()
        self._stream.close()
        info = self.fs.get_file_info(f"{self.root}/{self._path}")
        stats = {"numRecords": self._rows, "nullCount": self._nulls}
        self.actions.append(AddAction(
            path=self._path, size=info.size, partition_values=self.partition_values,
            modification_time=int(time.time() * 1000), data_change=True, stats=json.dumps(stats)))
        self._writer, self._rows, self._nulls = None, 0, {}

    def close(self) -> list[AddAction]:
        self._flush()
        if self._writer is not None:
            self._close_file()
        return self.actions


def _table_schema(uri: str, schema: pa.Schema, opts: dict | None) -> pa.Schema:
    """The table's schema after this write: its columns, then the new ones (types from `schema`)."""
    if not delta.table_exists(uri, opts):
        return schema
    current = pa.schema(DeltaTable(uri, storage_options=opts).schema().to_arrow())
    new = {f.name: f for f in schema}
    fields = [new.pop(f.name, f.with_nullable(True)) for f in current]
    return pa.schema([*fields, *new.values()])


def _ensure_table(uri: str, schema: pa.Schema, partition_by: Sequence[str], opts: dict | None) -> None:
    """Create the table empty first (see lakehouse.io.delta: racing creators are then harmless)."""
    if delta.table_exists(uri, opts):
        return
    try:
        DeltaTable.create(uri, schema=schema, partition_by=list(partition_by) or None, mode="ignore",
                          storage_options=opts)
    except CommitFailedError:
        if not delta.table_exists(uri, opts):
            raise


def _commit(uri: str, schema: pa.Schema, actions: list[AddAction], partition_by: Sequence[str],
            partition_filters: list | None, opts: dict | None, retries: int) -> int:
    _ensure_table(uri, schema, partition_by, opts)
    for attempt in range(retries + 1):
        try:
            table = DeltaTable(uri, storage_options=opts)
            table.create_write_transaction(actions, mode="overwrite", schema=_table_schema(uri, schema, opts),
                                           partition_by=list(partition_by) or None,
                                           partition_filters=partition_filters)
            return DeltaTable(uri, storage_options=opts).version()
        except CommitFailedError as exc:
            if not delta.is_conflict(exc):
                raise
            if attempt == retries:
                raise delta.ConcurrentWriteError(
                    f"{uri}: commit lost to a conflicting concurrent write of the same table "
                    f"{retries + 1} times; gave up ({exc})") from exc
            log.warning("%s: commit lost to a concurrent write (attempt %d of %d), retrying: %s",
                        uri, attempt + 1, retries + 1, str(exc).splitlines()[0])
            time.sleep(delta.COMMIT_BACKOFF_S * 2**attempt * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def _write_files(fs, root: str, folder: str, schema: pa.Schema, partition_values: dict[str, str],
                 batches: Iterable[pa.RecordBatch]) -> list[AddAction]:
    writer = _FileWriter(fs, root, folder, schema, partition_values)
    for batch in batches:
        if batch.num_rows:
            writer.write(batch)
    return writer.close()


def replace_days(
    uri: str,
    schema: pa.Schema,
    days: Sequence[dt.date],
    day_rows: Callable[[dt.date], Iterable[pa.RecordBatch]],
    *,
    partition_by: str = "event_date",
    storage_options: dict | None = None,
    retries: int = delta.COMMIT_RETRIES,
) -> int:
    """Replace the rows of `days` (partitions of `partition_by`) with `day_rows(day)` for each,
    in one commit; create the table if new. Returns the new version."""
    opts = delta.delta_options(uri, storage_options)
    fs, root = filesystem_for(uri)
    file_schema = _file_schema(schema, [partition_by])
    actions = []
    for day in sorted(days):
        value = day.isoformat()
        actions += _write_files(fs, root, f"{partition_by}={value}", file_schema, {partition_by: value},
                                day_rows(day))
    return _commit(uri, schema, actions, [partition_by], [(partition_by, "in", [d.isoformat() for d in days])],
                   opts, retries)


def replace_table(
    uri: str,
    schema: pa.Schema,
    rows: Iterable[pa.RecordBatch],
    *,
    storage_options: dict | None = None,
    retries: int = delta.COMMIT_RETRIES,
) -> int:
    """Replace the whole (unpartitioned) table with `rows` in one commit. Returns the new version."""
    opts = delta.delta_options(uri, storage_options)
    fs, root = filesystem_for(uri)
    actions = _write_files(fs, root, "", schema, {}, rows)
    return _commit(uri, schema, actions, [], None, opts, retries)


__all__ = ["replace_days", "replace_table"]
