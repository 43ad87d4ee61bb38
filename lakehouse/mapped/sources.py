"""Reading a mapped dataset's source files in bounded memory: finding them (a file, a folder or
a glob, local or on S3) and reading each one as a stream of batches.

- Parquet: one row group at a time (``ParquetFile.iter_batches``), only the mapped columns;
- CSV: ``pyarrow.csv.open_csv`` in 1 MB blocks, every column as text (the checks type them);
- JSON Lines: 4 MB blocks of whole lines, each read by polars (a key's type is inferred per
  block; the checks accept every type a value may take).

A batch is a polars frame of the mapped columns plus ``_row``: the row's number in its file,
counted from 1 over the data rows (after a CSV header; blank JSON lines are not rows). Memory
is bounded by the batch size whatever the file's size. Nothing here checks values: see
:mod:`lakehouse.mapped.checks`.
"""

from __future__ import annotations

import fnmatch
import io
import json
from typing import Iterator, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lakehouse.io.errors import clean
from lakehouse.io.storage import filesystem_for, list_files

SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".json": "jsonl"}
BATCH_ROWS = 16_384  # Parquet rows per batch
BLOCK_BYTES = 4 << 20  # JSON Lines bytes per batch (whole lines)
# CSV bytes per batch: pyarrow's streaming reader holds some tens of blocks at once (its
# readahead), about 150 MB at 4 MB blocks and 20 MB at 1 MB; a row must fit in a block
CSV_BLOCK_BYTES = 1 << 20
BOM = b"\xef\xbb\xbf"


class SourceDataError(ValueError):
    """The dataset's files cannot be imported as the mapping describes; nothing was written."""


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _hidden(rel: str) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.split("/") if part)


def find_files(uri: str) -> tuple[pafs.FileSystem, list[tuple[str, str]]]:
    """(filesystem, [(path in it, uri)]) for a file, a folder (every file under it, except
    hidden names such as _SUCCESS or .crc) or a glob (``*`` also crosses folders); sorted by
    path, which is the order rows are numbered and examples are chosen in."""
    s3 = uri.startswith("s3://")
    if _is_glob(uri):
        parts = uri.split("/")
        cut = next(i for i, p in enumerate(parts) if _is_glob(p))
        base, pattern = "/".join(parts[:cut]), "/".join(parts[cut:])
    else:
        base, pattern = uri, None
    fs, root = filesystem_for(base)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File and pattern is None:
        infos = [info]
    else:
        infos = []
        for i in list_files(fs, root):
            rel = i.path[len(root):].lstrip("/")
            if _hidden(rel) or (pattern is not None and not fnmatch.fnmatchcase(rel, pattern)):
                continue
            infos.append(i)
    return fs, [(i.path, f"s3://{i.path}" if s3 else i.path) for i in infos]


def format_of(file_uri: str, declared: str | None, where: str) -> str:
    if declared:
        return declared
    low = file_uri.lower()
    for suffix, fmt in SUFFIX_FORMATS.items():
        if low.endswith(suffix):
            return fmt
    raise SourceDataError(f"{file_uri}: cannot tell the file format from its name; set "
                          f"{where}.format to csv, parquet or jsonl in the mapping")


def _reason(exc: BaseException) -> str:
    return " ".join(clean(str(exc)).split())[:300]


def _bad_json_line(data: bytes, first_line: int) -> str:
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=first_line):
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                return f"line {n} is not a JSON object: {line[:120]!r}"
        except ValueError as exc:
            return f"line {n} is not valid JSON ({exc}): {line[:120]!r}"
    return ""


class SourceFile:
    """One source file, read as batches of the columns a mapping names."""

    def __init__(self, fs: pafs.FileSystem, path: str, uri: str, fmt: str, delimiter: str = ","):
        self.fs, self.path, self.uri, self.fmt, self.delimiter = fs, path, uri, fmt, delimiter
        # JSON Lines: the keys seen so far, in order of appearance (complete after a full read)
        self.seen_columns: list[str] = []
        self._columns: list[str] | None = None

    def _fail(self, exc: BaseException, detail: str = "") -> SourceDataError:
        if "straddl" in str(exc):  # pyarrow: a row longer than a block
            detail = f"a row is longer than {CSV_BLOCK_BYTES:,} bytes: an unclosed quote?"
        return SourceDataError(f"{self.uri}: cannot be read as {self.fmt} ({detail or _reason(exc)})")

    def is_empty(self) -> bool:
        """An empty (or, for text formats, blank) file: skipped, as a day without rows."""
        try:
            size = self.fs.get_file_info(self.path).size
            if size == 0:
                return True
            if self.fmt == "parquet" or size > (1 << 20):
                return False
            with self.fs.open_input_stream(self.path) as f:
                return not f.read().removeprefix(BOM).strip()
        except Exception as exc:
            raise SourceDataError(f"{self.uri}: cannot be read ({_reason(exc)})") from exc

    def columns(self) -> list[str] | None:
        """The file's columns when its header or schema says (CSV, Parquet); None for JSON Lines,
        whose keys are only known once every line is read."""
        if self._columns is None and self.fmt != "jsonl":
            try:
                if self.fmt == "parquet":
                    with self.fs.open_input_file(self.path) as f:
                        self._columns = list(pq.ParquetFile(f).schema_arrow.names)
                else:  # the header: the first block of the file, parsed as the read will
                    with self.fs.open_input_stream(self.path) as f:
                        self._columns = list(pacsv.open_csv(f, read_options=pacsv.ReadOptions(block_size=1 << 20),
                                                            parse_options=self._csv_parse()).schema.names)
            except Exception as exc:
                raise self._fail(exc) from exc
        return self._columns

    def batches(self, wanted: Sequence[str]) -> Iterator[pl.DataFrame]:
        """The file's rows in batches: the `wanted` columns it has (all as stored for Parquet,
        text for CSV, inferred per block for JSON Lines) and ``_row``."""
        reader = {"parquet": self._parquet, "csv": self._csv, "jsonl": self._jsonl}[self.fmt]
        offset = 0
        for df in reader(list(wanted)):
            if df.height == 0:
                continue
            yield df.with_row_index("_row", offset=offset + 1).with_columns(pl.col("_row").cast(pl.Int64))
            offset += df.height

    def rows(self, wanted: Sequence[str], numbers: set[int]) -> dict[int, dict]:
        """Some rows by their number (for an example of a problem found after the read)."""
        out: dict[int, dict] = {}
        for df in self.batches(wanted):
            hit = df.filter(pl.col("_row").is_in(sorted(numbers)))
            out.update({r["_row"]: r for r in hit.iter_rows(named=True)})
            if len(out) == len(numbers):
                break
        return out

    # ------------------------------------------------------------ formats

    def _parquet(self, wanted: list[str]) -> Iterator[pl.DataFrame]:
        try:
            with self.fs.open_input_file(self.path) as f:
                pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 20)
                cols = [c for c in pf.schema_arrow.names if c in set(wanted)]
                for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols):
                    yield pl.from_arrow(pa.Table.from_batches([batch]), rechunk=False)
        except SourceDataError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc

    def _csv_parse(self) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True)

    def _csv(self, wanted: list[str]) -> Iterator[pl.DataFrame]:
        names = self.columns() or []
        cols = [c for c in names if c in set(wanted)]
        if not cols:  # pyarrow reads every column for an empty include_columns
            return
        try:
            with self.fs.open_input_stream(self.path) as f:
                reader = pacsv.open_csv(
                    f, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
                    parse_options=self._csv_parse(),
                    # every column as text, an empty field as null (as polars reads CSV)
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in names}, include_columns=cols,
                        null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False))
                for batch in reader:
                    yield pl.from_arrow(pa.Table.from_batches([batch]), rechunk=False)
        except SourceDataError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc

    def _jsonl(self, wanted: list[str]) -> Iterator[pl.DataFrame]:
        line = 1  # the first line of the block, for messages
        rest = b""
        try:
            stream = self.fs.open_input_stream(self.path)
        except Exception as exc:
            raise SourceDataError(f"{self.uri}: cannot be read ({_reason(exc)})") from exc
        with stream as f:
            first = True
            while True:
                try:
                    chunk = f.read(BLOCK_BYTES)
                except Exception as exc:
                    raise SourceDataError(f"{self.uri}: cannot be read ({_reason(exc)})") from exc
                if first:
                    chunk, first = chunk.removeprefix(BOM), False
                data = rest + chunk
                if chunk:
                    cut = data.rfind(b"\n") + 1
                    data, rest = data[:cut], data[cut:]
                else:
                    rest = b""
                if data.strip():
                    try:
                        df = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
                    except Exception as exc:
                        raise self._fail(exc, _bad_json_line(data, line)) from exc
                    self.seen_columns += [c for c in df.columns if c not in self.seen_columns]
                    yield df.select([c for c in df.columns if c in set(wanted)])
                line += data.count(b"\n")
                if not chunk:
                    return


def open_files(uri: str, declared_format: str | None, delimiter: str, where: str) -> list[SourceFile]:
    """Every source file of a table (an empty list when none matches)."""
    fs, files = find_files(uri)
    return [SourceFile(fs, path, file_uri, format_of(file_uri, declared_format, where), delimiter)
            for path, file_uri in files]


__all__ = ["BATCH_ROWS", "BLOCK_BYTES", "CSV_BLOCK_BYTES", "SUFFIX_FORMATS", "SourceDataError", "SourceFile",
           "find_files", "format_of", "open_files"]
