"""The checked rows of a mapped import, staged on local disk, and what needs all of them at once.

The import converts each batch of each source file into bronze columns and appends it to
Parquet files in a temporary folder of the run-state directory (``LAKEHOUSE_DATA_DIR``), removed
when the import ends: the interactions one folder per day (so a day can be written on its own),
each side table one file. DuckDB, under a small memory limit and spilling to that folder, then
answers what needs every row (duplicated side-table keys, whether a ``take`` occurs, ids absent
from a side table, the days present) and streams the rows to write, day by day, with their
interaction ids. Memory stays bounded whatever the size of the source; nothing here writes to
the lakehouse (:mod:`lakehouse.mapped.write` does).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakehouse.contract import TS
from lakehouse.mapped.mapping import DatasetMapping

INTERACTIONS = "mapped_interactions"
USERS = "mapped_users"
ITEMS = "mapped_items"
KEYS = "interaction_keys"  # the staged interaction columns the whole-dataset questions need
KEY_COLUMNS = ("event_date", "user_id", "item_id", "event_type", "rating", "_event_value")
# DuckDB spills to the staging folder beyond this (aggregates over every row, the id window)
DUCKDB_MEMORY_LIMIT = "64MB"
DUCKDB_THREADS = 1
STREAM_ROWS = 65_536  # rows per batch handed to the Delta writer
MAX_OPEN_DAY_FILES = 32  # staged day files open at once (a day seen again later gets another file)
STAGE_GROUP_ROWS = 32_768  # a staged file's rows are written in row groups of about this size,
STAGE_PENDING_ROWS = 131_072  # and all files' pending rows are written when they reach this
# A staged file is closed after this many row groups: a Parquet writer keeps each row group's
# metadata (about 1 KB a column) until it closes. A day file's row groups are small (the pending
# rows are shared by every day), so it is closed early; a day has several files.
STAGE_FILE_GROUPS = {"day": 16, "one": 1024}


def _schema(fields: list[tuple[str, pa.DataType, bool]]) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=nullable) for n, t, nullable in fields])


def _attr_fields(columns: dict[str, str]) -> list[tuple[str, pa.DataType, bool]]:
    return [(c, pa.string() if kind == "categorical" else pa.float64(), True) for c, kind in columns.items()]


def bronze_schemas(m: DatasetMapping) -> dict[str, pa.Schema]:
    """The three bronze tables' schemas (what is written)."""
    side = {}
    for name, key, cols in ((USERS, "user_id", m.user_columns()), (ITEMS, "item_id", m.item_columns())):
        side[name] = _schema([(key, pa.string(), False), *_attr_fields(cols),
                              ("_source_file", pa.string(), False), ("_ingested_at", TS, False)])
    return {INTERACTIONS: _schema([
        ("interaction_id", pa.string(), False), ("user_id", pa.string(), False),
        ("item_id", pa.string(), False), ("event_ts", TS, False), ("event_date", pa.date32(), False),
        ("platform", pa.string(), False), ("event_type", pa.string(), False),
        ("rating", pa.float64(), True), *_attr_fields(m.context_columns()),
        ("_source_file", pa.string(), False), ("_ingested_at", TS, False)]), **side}


def staged_schemas(m: DatasetMapping) -> dict[str, pa.Schema]:
    """What is staged per table: the bronze columns known before the whole dataset is (no
    interaction id, no ingestion time), plus the source row (``_row``), and the raw event value."""
    out = {}
    for name, schema in bronze_schemas(m).items():
        fields = [f.with_nullable(True) for f in schema if f.name not in ("interaction_id", "_ingested_at")]
        if name == INTERACTIONS and m.interactions.event:
            fields.append(pa.field("_event_value", pa.string()))
        out[name] = pa.schema([*fields, pa.field("_row", pa.int64())])
    return out


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Stage:
    """A temporary folder of staged Parquet files and a DuckDB connection on it.

    Interactions are staged twice: every column in a folder per day (read a day at a time to be
    written), and the columns the whole-dataset questions need in one file (DuckDB keeps some
    memory per file it scans, so those questions read one file, not hundreds). A side table is
    one file. In DuckDB, ``mapped_interactions`` is that one file; ``mapped_users`` /
    ``mapped_items`` the side tables."""

    def __init__(self, data_dir: str, schemas: dict[str, pa.Schema]):
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="mapped-import-", dir=data_dir))
        self.schemas = {**schemas, KEYS: pa.schema([f for f in schemas[INTERACTIONS] if f.name in KEY_COLUMNS])}
        self.rows = {name: 0 for name in schemas}
        self._writers: dict[tuple[str, str], pq.ParquetWriter] = {}  # (table, day or "") -> writer
        self._pending: dict[tuple[str, str], list[pa.Table]] = {}  # rows not written yet, per file
        self._pending_rows: dict[tuple[str, str], int] = {}
        self._groups: dict[tuple[str, str], int] = {}  # row groups in each open day file
        self._files = 0
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.finish_writing()
        if self._con is not None:
            self._con.close()
            self._con = None
        shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------ staging

    def append(self, table: str, frame: pl.DataFrame) -> None:
        """Stage a batch of a table. Rows are kept until a file has a row group's worth
        (STAGE_GROUP_ROWS), or all pending rows reach STAGE_PENDING_ROWS."""
        if self._con is not None:
            raise RuntimeError("staging is over once the staged rows are queried")
        schema = self.schemas[table]
        rows = frame.select(schema.names).to_arrow().cast(schema)
        if table == INTERACTIONS:
            self._add((KEYS, ""), rows.select(self.schemas[KEYS].names))
            rows = rows.take(pc.sort_indices(rows["event_date"]))  # by day, then a slice per day
            start = 0
            for count in sorted(pc.value_counts(rows["event_date"]).to_pylist(), key=lambda c: c["values"]):
                self._add((table, count["values"].isoformat()), rows.slice(start, count["counts"]))
                start += count["counts"]
        else:
            self._add((table, ""), rows)
        if sum(self._pending_rows.values()) >= STAGE_PENDING_ROWS:
            for key in list(self._pending):
                self._write(key)
        self.rows[table] += frame.height

    def _add(self, key: tuple[str, str], rows: pa.Table) -> None:
        self._pending.setdefault(key, []).append(rows)
        self._pending_rows[key] = self._pending_rows.get(key, 0) + rows.num_rows
        if self._pending_rows[key] >= STAGE_GROUP_ROWS:
            self._write(key)

    def _write(self, key: tuple[str, str]) -> None:
        table, day = key
        schema = self.schemas[table]
        rows = pa.concat_tables(self._pending.pop(key, []) or [schema.empty_table()])
        self._pending_rows.pop(key, None)
        writer = self._writers.pop(key, None)  # re-inserted: the dict's order is least recently used
        if writer is None:
            if day and len([k for k in self._writers if k[1]]) >= MAX_OPEN_DAY_FILES:
                oldest = next(k for k in self._writers if k[1])
                self._writers.pop(oldest).close()
                self._groups.pop(oldest, None)
            folder = self.folder / table / (f"event_date={day}" if day else "")
            folder.mkdir(parents=True, exist_ok=True)
            self._files += 1
            writer = pq.ParquetWriter(folder / f"part-{self._files:06d}.parquet", schema,
                                      use_dictionary=False, compression="lz4")
        writer.write_table(rows, row_group_size=max(1, rows.num_rows))
        self._groups[key] = self._groups.get(key, 0) + 1
        if self._groups[key] >= STAGE_FILE_GROUPS["day" if day else "one"]:
            writer.close()
            self._groups.pop(key)
        else:
            self._writers[key] = writer

    def finish_writing(self) -> None:
        for key in list(self._pending):
            self._write(key)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._groups.clear()

    def _files_of(self, table: str, day: str | None = None) -> str:
        folder = self.folder / table
        return str((folder / f"event_date={day}" if day else folder) / "*.parquet")

    # ------------------------------------------------------------ DuckDB

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self.finish_writing()
            con = duckdb.connect(config={
                "memory_limit": DUCKDB_MEMORY_LIMIT, "threads": DUCKDB_THREADS,
                "temp_directory": str(self.folder / "spill"), "preserve_insertion_order": False})
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET enable_progress_bar = false")  # it would print on stdout
            for name, staged in ((INTERACTIONS, KEYS), (USERS, USERS), (ITEMS, ITEMS)):
                if not list((self.folder / staged).glob("*.parquet")):  # an empty file with the columns
                    self._write((staged, ""))
                    self.finish_writing()
                con.execute(f"create view {name} as select * from "
                            f"read_parquet({_sql_str(self._files_of(staged))}, hive_partitioning = false)")
            self._con = con
        return self._con

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self.con.execute(sql, list(params)).fetchall()

    def stream(self, sql: str, schema: pa.Schema, params: Sequence = ()) -> pa.RecordBatchReader:
        """The rows of `sql`, batch by batch, typed as `schema` (a new query on each call)."""
        reader = self.con.execute(sql, list(params)).to_arrow_reader(STREAM_ROWS)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in reader:
                yield batch.select(schema.names).cast(schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    # ------------------------------------------------------------ whole-dataset questions

    def duplicated_key(self, table: str, key: str) -> tuple[str, int, int, list[tuple[str, int]]] | None:
        """(first duplicated key in file/row order, its count, how many keys are duplicated, its
        first two (file, row)) or None."""
        n = self.query(f"select count(*) from (select {key} from {table} group by 1 having count(*) > 1)")[0][0]
        if not n:
            return None
        first = self.query(f"""
            select {key} from {table}
            where {key} in (select {key} from {table} group by 1 having count(*) > 1)
            order by _source_file, _row limit 1""")[0][0]
        rows = self.query(f"select _source_file, _row from {table} where {key} = ? order by _source_file, _row",
                          [first])
        return first, len(rows), n, rows[:2]

    def days(self) -> list[dt.date]:
        return [r[0] for r in self.query(f"select distinct event_date from {INTERACTIONS} order by 1")]

    def event_types(self, days: Sequence[dt.date] | None) -> dict[str, int]:
        rows = self.query(f"select event_type, count(*) from {INTERACTIONS} {_where_days(days)} group by 1")
        return dict(sorted(rows))

    def count(self, table: str, days: Sequence[dt.date] | None = None) -> int:
        return self.query(f"select count(*) from {table} {_where_days(days) if days is not None else ''}")[0][0]

    # count(distinct ...) keeps its hash table in memory; a grouping spills to disk when it must

    def distinct(self, table: str, column: str) -> int:
        return self.query(f"select count(*) from (select {column} from {table} group by 1)")[0][0]

    def ids_absent(self, side: str, key: str) -> tuple[int, int]:
        """(distinct interaction ids absent from a side table, interaction rows with one)."""
        return self.query(f"""select count(*), coalesce(sum(n), 0) from (
                                  select i.{key}, count(*) as n from {INTERACTIONS} i
                                  anti join {side} s on i.{key} = s.{key} group by 1)""")[0]

    def take_count(self) -> int:
        return self.query(f"select count(*) from {INTERACTIONS} where event_type = 'take'")[0][0]

    def event_values(self, limit: int = 10) -> list[tuple[str | None, int]]:
        return self.query(f"""select _event_value, count(*) as n from {INTERACTIONS} group by 1
                              order by n desc, _event_value asc nulls first limit {int(limit)}""")

    def values_seen(self, values: Sequence[str]) -> set[str]:
        if not values:
            return set()
        return {r[0] for r in self.query(f"select distinct _event_value from {INTERACTIONS} "
                                         f"where _event_value in (select unnest(?::varchar[]))", [list(values)])}

    def rating_range(self, threshold: float) -> tuple[int, float | None, float | None]:
        return self.query(f"select count(*) filter (where rating >= ?), min(rating), max(rating) "
                          f"from {INTERACTIONS}", [threshold])[0]

    # ------------------------------------------------------------ what is written

    def day_rows(self, day: dt.date, schema: pa.Schema, ingested_at: dt.datetime) -> Iterator[pa.RecordBatch]:
        """The interaction rows of `day` in bronze columns, each with a stable id: the md5 of its
        identity plus its ordinal among identical rows in (file, row) order, so that re-importing
        the same data gives the same ids. Identical rows share their day (the time is part of the
        identity); only those (few) are numbered, in a window over them alone."""
        identity = "user_id, item_id, event_ts, event_type, rating"
        files = f"read_parquet({_sql_str(self._files_of(INTERACTIONS, day.isoformat()))}, hive_partitioning = false)"
        self.con.execute(f"""
            create or replace temp table _repeated as
            with day as (select {identity}, _source_file, _row, hash({identity}) as h from {files})
            select _source_file, _row,
                   row_number() over (partition by {identity} order by _source_file, _row) - 1 as ordinal
            from day where h in (select h from day group by h having count(*) > 1)""")
        cols = ", ".join(f"i.{c}" for c in schema.names if c not in ("interaction_id", "_ingested_at"))
        return self.stream(f"""
            select md5(concat_ws(chr(31), i.user_id, i.item_id, cast(epoch_us(i.event_ts) as varchar),
                                 i.event_type, coalesce(cast(i.rating as varchar), ''),
                                 cast(coalesce(r.ordinal, 0) as varchar))) as interaction_id,
                   {cols}, ?::timestamptz as _ingested_at
            from {files} i left join _repeated r using (_source_file, _row)""", schema, [ingested_at])

    def side_stream(self, table: str, schema: pa.Schema, ingested_at: dt.datetime,
                    ids_from: str | None = None) -> pa.RecordBatchReader:
        """A side table's staged rows; with `ids_from` (the table's path, when the mapping declares
        none), the distinct ids of the interactions instead. Not sorted: a sort of every id
        needs more memory than the rest of the import."""
        key = schema.names[0]
        if ids_from is not None:
            return self.stream(f"""select {key}, ? as _source_file, ?::timestamptz as _ingested_at
                                   from (select {key} from {INTERACTIONS} group by 1)""",
                               schema, [ids_from, ingested_at])
        cols = ", ".join(c for c in schema.names if c != "_ingested_at")
        return self.stream(f"select {cols}, ?::timestamptz as _ingested_at from {table}",
                           schema, [ingested_at])


def _where_days(days: Sequence[dt.date] | None, prefix: str = "") -> str:
    if days is None:
        return ""
    if not days:
        return "where false"
    return f"where {prefix}event_date in ({', '.join(f'DATE {_sql_str(d.isoformat())}' for d in sorted(set(days)))})"


__all__ = ["INTERACTIONS", "ITEMS", "USERS", "Stage", "bronze_schemas", "staged_schemas"]
