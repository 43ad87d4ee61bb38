"""The day manifest: the contract of a landing day.

The exporter writes ``<landing>/_manifests/date=YYYY-MM-DD.json`` LAST, after every file of the
day, listing each file with its row count and its size and/or sha256::

    {"date": "2026-09-03",
     "files": [{"path": "workouts/date=2026-09-03/part-0000.parquet", "entity": "workouts",
                "rows": 255, "bytes": 20417, "sha256": "9f2c..."}, ...]}

``path`` is relative to the landing root. An entity with nothing that day is listed with a file
of 0 rows (or, when it wrote no file at all, under ``"empty": ["bookmarks", ...]``): a manifest
names every entity of the day, so a folder that is missing is told apart from a quiet day.

Ingest verifies the day's files against it before writing anything (:func:`verify_listing`
for presence, extras and sizes; rows and checksums as each file is read), and the landing sensor
offers a day only once its manifest is there and matches the listing (:func:`day_status`).

``python -m lakehouse.landing.manifest seal <landing> <YYYY-MM-DD>`` writes the manifest of a day
from the files that are there (for exports written by hand; an exporter should write its own).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lakehouse.io.storage import filesystem_for, join_uri, list_files

MANIFEST_DIR = "_manifests"
SUPPORTED = (".parquet", ".jsonl", ".ndjson")


class ManifestError(RuntimeError):
    """A landing day's manifest is missing, unreadable, or disagrees with the day's files: the
    day is not ingested and nothing is written."""


@dataclass(frozen=True)
class ListedFile:
    path: str  # relative to the landing root: <entity>/date=YYYY-MM-DD/<name>
    entity: str
    rows: int
    bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class DayManifest:
    day: dt.date
    uri: str
    files: dict[str, ListedFile]  # path -> file
    empty: frozenset[str] = frozenset()  # entities declared empty without a file

    @property
    def entities(self) -> set[str]:
        return {f.entity for f in self.files.values()} | set(self.empty)

    def rows(self, entity: str) -> int:
        return sum(f.rows for f in self.files.values() if f.entity == entity)


@dataclass
class DayStatus:
    """What the landing zone holds for a day, as the sensor sees it."""

    day: str
    files: dict[str, int] = field(default_factory=dict)  # relative path -> size of each data file
    manifest: DayManifest | None = None
    problems: list[str] = field(default_factory=list)  # why the day is not complete yet
    fingerprint: str = ""
    oldest_mtime_ns: int | None = None

    @property
    def complete(self) -> bool:
        return self.manifest is not None and not self.problems


def manifest_uri(landing_uri: str, day: dt.date) -> str:
    return join_uri(landing_uri, MANIFEST_DIR, f"date={day.isoformat()}.json")


def is_data_file(name: str) -> bool:
    return not name.startswith(("_", ".")) and name.lower().endswith(SUPPORTED)


def _fail(uri: str, what: str) -> ManifestError:
    return ManifestError(f"{uri}: {what}")


def parse_manifest(body: bytes, uri: str, day: dt.date) -> DayManifest:
    """Parse and check the form of a manifest; every problem is named at once."""
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(uri, f"not a JSON document ({exc})") from exc
    if not isinstance(doc, dict):
        raise _fail(uri, f"expected a JSON object, got {type(doc).__name__}")
    problems = []
    if doc.get("date") != day.isoformat():
        problems.append(f"'date' is {doc.get('date')!r}, expected '{day.isoformat()}'")
    entries = doc.get("files")
    if not isinstance(entries, list):
        problems.append("'files' is missing: expected a list of {path, entity, rows, bytes and/or sha256}"
                        " (a manifest with only row counts per entity is the old form; re-export the day)")
        entries = []
    files: dict[str, ListedFile] = {}
    for i, e in enumerate(entries):
        where = f"files[{i}]"
        if not isinstance(e, dict):
            problems.append(f"{where}: expected an object")
            continue
        path, entity, rows = e.get("path"), e.get("entity"), e.get("rows")
        if not isinstance(path, str) or not path:
            problems.append(f"{where}.path: expected the file's path relative to the landing root")
            continue
        path = path.strip("/")
        if not isinstance(entity, str) or not path.startswith(f"{entity}/date={day.isoformat()}/"):
            problems.append(f"{where} ({path}): 'entity' {entity!r} does not match the path, expected "
                            f"<entity>/date={day.isoformat()}/<file>")
            continue
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            problems.append(f"{where} ({path}): 'rows' is {rows!r}, expected a count >= 0")
            continue
        size, digest = e.get("bytes"), e.get("sha256")
        if size is None and digest is None:
            problems.append(f"{where} ({path}): needs 'bytes' or 'sha256' (or both)")
            continue
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            problems.append(f"{where} ({path}): 'bytes' is {size!r}, expected a size >= 0")
            continue
        if digest is not None and (not isinstance(digest, str) or len(digest) != 64):
            problems.append(f"{where} ({path}): 'sha256' is {digest!r}, expected 64 hex digits")
            continue
        if path in files:
            problems.append(f"{where}: {path} listed twice")
            continue
        files[path] = ListedFile(path=path, entity=entity, rows=rows, bytes=size,
                                 sha256=digest.lower() if digest else None)
    empty = doc.get("empty", [])
    if not isinstance(empty, list) or not all(isinstance(x, str) for x in empty):
        problems.append("'empty' must be a list of entity names")
        empty = []
    if problems:
        raise _fail(uri, "; ".join(problems))
    return DayManifest(day=day, uri=uri, files=files, empty=frozenset(empty))


def read_manifest(landing_uri: str, day: dt.date) -> DayManifest | None:
    """The day's manifest, or None if there is none; a malformed one raises ManifestError."""
    uri = manifest_uri(landing_uri, day)
    fs, path = filesystem_for(uri)
    try:
        with fs.open_input_stream(path) as f:
            body = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        raise _fail(uri, f"cannot be read ({exc})") from exc
    return parse_manifest(body, uri, day)


def verify_listing(manifest: DayManifest, listing: Mapping[str, int], entities: Iterable[str],
                   base: str = "") -> list[str]:
    """Problems between the manifest and the files that are there (relative path -> size):
    a listed file missing or of another size, a file not listed, an entity not named. Files are
    named as `base`/path (base: the landing root's URI)."""
    problems = []
    at = (base.rstrip("/") + "/") if base else ""
    for path, f in sorted(manifest.files.items()):
        if path not in listing:
            problems.append(f"{at}{path}: listed in the manifest ({f.rows} rows) but missing")
        elif f.bytes is not None and listing[path] != f.bytes:
            problems.append(f"{at}{path}: {listing[path]} bytes, the manifest says {f.bytes} "
                            "(truncated or changed after the manifest was written)")
    for path in sorted(set(listing) - set(manifest.files)):
        problems.append(f"{at}{path}: not listed in the manifest (an extra file)")
    missing = sorted(set(entities) - manifest.entities)
    if missing:
        problems.append(f"entities {missing} are not named in the manifest (list a file of 0 rows, "
                        "or the entity under 'empty', for a day without such rows)")
    return problems


def verify_file(listed: ListedFile, *, rows: int, sha256: str, uri: str | None = None) -> list[str]:
    """Problems between one file as read (named `uri`) and its manifest entry."""
    problems = []
    name = uri or listed.path
    if rows != listed.rows:
        problems.append(f"{name}: {rows} rows read, the manifest says {listed.rows}")
    if listed.sha256 is not None and sha256 != listed.sha256:
        problems.append(f"{name}: sha256 {sha256[:12]}..., the manifest says "
                        f"{listed.sha256[:12]}... (the file changed after the manifest was written)")
    return problems


def day_listing(landing_uri: str, day: dt.date, entities: Sequence[str]) -> dict[str, int]:
    """relative path -> size of the day's data files, for the given entities."""
    fs, root = filesystem_for(landing_uri)
    out = {}
    for entity in entities:
        folder = f"{root}/{entity}/date={day.isoformat()}"
        for info in list_files(fs, folder):
            if is_data_file(info.base_name):
                out[info.path[len(root):].lstrip("/")] = info.size
    return out


def count_rows(name: str, body: bytes) -> int:
    """Rows of a landing file: Parquet metadata, or the non-blank lines of JSON Lines."""
    if name.lower().endswith(".parquet"):
        return pq.ParquetFile(io.BytesIO(body)).metadata.num_rows
    return sum(1 for line in body.decode("utf-8-sig").splitlines() if line.strip())


_DAY_FILE = re.compile(r"^([A-Za-z0-9_]+)/date=(\d{4}-\d{2}-\d{2})/([^/]+)$")
_MANIFEST_FILE = re.compile(rf"^{MANIFEST_DIR}/date=(\d{{4}}-\d{{2}}-\d{{2}})\.json$")


def scan_landing(landing_uri: str, entities: Sequence[str],
                 known: Mapping[str, str] | None = None) -> dict[str, DayStatus]:
    """Every landed day with its fingerprint (files, sizes, mtimes and the manifest's) and, for a
    day whose fingerprint is not in `known` (already offered), whether it is complete: its
    manifest is there, well formed, and matches the files (none missing, none extra, sizes)."""
    fs, root = filesystem_for(landing_uri)
    days: dict[str, DayStatus] = {}
    parts: dict[str, list[str]] = {}
    for info in list_files(fs, root):
        rel = info.path[len(root):].lstrip("/")
        mtime = info.mtime_ns or 0
        if (m := _MANIFEST_FILE.match(rel)):
            day = days.setdefault(m.group(1), DayStatus(m.group(1)))
            parts.setdefault(day.day, []).append(f"{rel}:{info.size}:{mtime}")
            continue
        m = _DAY_FILE.match(rel)
        if not m or m.group(1) not in entities or not is_data_file(m.group(3)):
            continue
        day = days.setdefault(m.group(2), DayStatus(m.group(2)))
        day.files[rel] = info.size
        parts.setdefault(day.day, []).append(f"{rel}:{info.size}:{mtime}")
        day.oldest_mtime_ns = mtime if day.oldest_mtime_ns is None else min(day.oldest_mtime_ns, mtime)
    for name, day in days.items():
        day.fingerprint = hashlib.sha1("\n".join(sorted(parts[name])).encode()).hexdigest()[:16]
        if known is not None and known.get(name) == day.fingerprint:
            continue
        d = dt.date.fromisoformat(name)
        try:
            day.manifest = read_manifest(landing_uri, d)
        except ManifestError as exc:
            day.problems.append(str(exc))
            continue
        if day.manifest is None:
            day.problems.append(f"no manifest yet ({len(day.files)} files landed; the exporter writes "
                                f"{MANIFEST_DIR}/date={name}.json last)")
            continue
        day.problems += verify_listing(day.manifest, day.files, entities, landing_uri)
    return days


def first_landed_day(landing_uri: str) -> dt.date | None:
    """The first day whose manifest the exporter wrote (None: an empty or absent landing zone):
    where the daily partitions of a landing zone start. Lists only the manifests' folder."""
    fs, root = filesystem_for(landing_uri)
    days = [m.group(1) for info in list_files(fs, join_uri(root, MANIFEST_DIR))
            if (m := _MANIFEST_FILE.match(f"{MANIFEST_DIR}/{info.path.rsplit('/', 1)[-1]}"))]
    return dt.date.fromisoformat(min(days)) if days else None


def build_manifest(landing_uri: str, day: dt.date, entities: Sequence[str]) -> dict:
    """A manifest for what the landing zone holds for `day` (every entity named)."""
    fs, root = filesystem_for(landing_uri)
    files, empty = [], []
    for entity in entities:
        folder = f"{root}/{entity}/date={day.isoformat()}"
        infos = [i for i in list_files(fs, folder) if is_data_file(i.base_name)]
        if not infos:
            empty.append(entity)
        for info in infos:
            with fs.open_input_stream(info.path) as f:
                body = f.read()
            try:
                rows = count_rows(info.base_name, body)
            except Exception as exc:  # an exporter lists only files it could read back
                raise ManifestError(f"{info.path}: cannot count its rows ({exc})") from exc
            files.append({"path": info.path[len(root):].lstrip("/"), "entity": entity,
                          "rows": rows, "bytes": len(body),
                          "sha256": hashlib.sha256(body).hexdigest()})
    return {"date": day.isoformat(), "files": files, "empty": empty}


def seal_day(landing_uri: str, day: dt.date, entities: Sequence[str]) -> dict:
    """Write the manifest of `day` from the files there (the last write of the day)."""
    doc = build_manifest(landing_uri, day, entities)
    fs, path = filesystem_for(manifest_uri(landing_uri, day))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(json.dumps(doc, indent=1, sort_keys=True).encode())
    return doc


def main(argv: list[str] | None = None) -> int:
    from lakehouse.contract import ENTITIES

    p = argparse.ArgumentParser(prog="python -m lakehouse.landing.manifest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    seal = sub.add_parser("seal", help="write a day's manifest from the files that are there")
    seal.add_argument("landing", help="landing root: a folder or s3://bucket/prefix")
    seal.add_argument("day", type=dt.date.fromisoformat, help="YYYY-MM-DD")
    args = p.parse_args(argv)
    doc = seal_day(args.landing, args.day, [e.name for e in ENTITIES])
    print(f"{manifest_uri(args.landing, args.day)}: {len(doc['files'])} files, "
          f"{sum(f['rows'] for f in doc['files'])} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
