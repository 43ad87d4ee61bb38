"""Reading a landing day's files: listing them, and each file as rows (Parquet typed as it is,
JSON Lines as text for the contract step to type, with the lines that are not JSON objects kept
apart for the quarantine). A file that cannot be read at all raises :class:`LandingFileError`."""

from __future__ import annotations

import datetime as dt
import io
import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.contract import Entity
from lakehouse.io.settings import LakehouseSettings
from lakehouse.io.storage import filesystem_for, join_uri, list_files


class LandingFileError(RuntimeError):
    """A landing file that cannot be read at all: the run stops before writing anything."""


def _day_folder(day: dt.date) -> str:
    return f"date={day.isoformat()}"


def landing_files(settings: LakehouseSettings, entity: str, day: dt.date):
    uri = join_uri(settings.landing_uri, entity, _day_folder(day))
    fs, root = filesystem_for(uri)
    infos = [i for i in list_files(fs, root) if not i.base_name.startswith(("_", "."))]
    return fs, uri, root, infos


def read_bytes(fs, path: str, uri: str) -> bytes:
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except Exception as exc:
        raise LandingFileError(f"{uri}: cannot be read ({exc})") from exc


def read_parquet(body: bytes, uri: str) -> pl.DataFrame:
    try:
        table = pq.read_table(pa.BufferReader(body))
    except Exception as exc:  # corrupt, truncated, not parquet
        raise LandingFileError(f"{uri}: cannot be read as Parquet ({exc})") from exc
    return pl.from_arrow(table)


def _json_text(value) -> str | None:
    """A JSON value as the string ingest types from (every format goes through one typing step)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)  # 45.7 -> '45.7', nan -> 'nan': rejected by an integer column
    return str(value)


def read_jsonl(body: bytes, uri: str, entity: Entity) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Returns (rows as strings, unparseable lines). All values come in as strings and are
    typed by the contract step, so a mistyped value rejects its row, not the file. A UTF-8 byte
    order mark is allowed (editors on Windows write one)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandingFileError(f"{uri}: not UTF-8 text, expected JSON Lines ({exc})") from exc
    schema = {c.name: pl.String for c in entity.columns}
    try:
        data = text.encode()
        df = pl.read_ndjson(io.BytesIO(data), schema=schema) if text.strip() else pl.DataFrame(schema=schema)
        df = df.with_row_index("_row_number", offset=1)
        # read_ndjson skips blank lines; line numbers stay right only without them
        if text.count("\n") + (0 if text.endswith("\n") else 1) != df.height and text.strip():
            raise ValueError("blank lines")
        return df, pl.DataFrame()
    except Exception:
        pass
    # Slow path, only for files with bad or blank lines: find them one by one.
    rows, bad = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            rows.append({"_row_number": n, **{k: _json_text(obj.get(k)) for k in schema}})
        except ValueError as exc:
            bad.append({"_row_number": n, "reason": f"line is not a valid JSON object ({exc})",
                        "record": line[:2000]})
    if not rows and bad:
        raise LandingFileError(f"{uri}: no line parses as JSON; first error at line "
                               f"{bad[0]['_row_number']}: {bad[0]['reason']}")
    df = pl.DataFrame(rows, schema={"_row_number": pl.UInt32, **schema})
    return df, pl.DataFrame(bad)


__all__ = ["LandingFileError", "landing_files", "read_bytes", "read_jsonl", "read_parquet"]
