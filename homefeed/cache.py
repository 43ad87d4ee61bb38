"""Versioned on-disk key-value cache of home-feed payloads, published atomically.

Layout under the cache root:
    versions/<name>.sqlite   one immutable SQLite file per version (tables meta, payload, popular)
    CURRENT                  text: the name of the version being served
A publish builds the new file aside, fsyncs it and hard-links it into place, then swaps CURRENT
with write-tmp + fsync + os.replace, and only then drops the temp name. Readers follow CURRENT;
a version file is never modified once linked, so a reader holding it open sees one consistent
version even if it is pruned. A publisher killed at any step leaves CURRENT as it was; the next
publish or rollback removes what it left (see _remove_stale_temps).

    python -m homefeed.cache status   --cache DIR
    python -m homefeed.cache rollback --cache DIR [--to VERSION]

Over 400 lines: the publish protocol, the reader and the clean-up after a killed publisher
share one on-disk layout and must change together.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # polars is only needed to publish; the read path stays light
    import polars as pl

log = logging.getLogger(__name__)

# the simulator's (lakehouse/contract.py; homefeed imports nothing from the lakehouse, and
# tests/test_vocabulary.py holds this copy to it); a mapped dataset brings its own
PLATFORMS = ("bike", "tread", "app")
# any platform id a dataset may use (a mapped one without platforms has the single "all")
PLATFORM_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
POPULAR_ROW = "popular"
CURRENT = "CURRENT"
VERSIONS = "versions"
_TMP_SUFFIX = ".sqlite.tmp"
_INSERT_BATCH = 5_000

_SCHEMA = """
PRAGMA page_size = 8192;
PRAGMA journal_mode = OFF;   -- a failed build is deleted, never rolled back
PRAGMA synchronous = OFF;    -- the finished file is fsynced once before it is linked
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE payload (user_id TEXT NOT NULL, platform TEXT NOT NULL, body BLOB NOT NULL,
                      PRIMARY KEY (user_id, platform));
CREATE TABLE popular (platform TEXT PRIMARY KEY, body BLOB NOT NULL);
"""


class CacheError(ValueError):
    """Input or cache state that must not be published or served."""


@dataclass(frozen=True)
class CacheVersion:
    name: str
    path: Path
    serve_date: dt.date
    model_version: int
    created_at: dt.datetime
    keys: int  # (user_id, platform) pairs
    rows: int  # input recommendation rows (items)
    row_ids: tuple[str, ...] = ()
    platforms: tuple[str, ...] = PLATFORMS


def default_cache_dir() -> Path:
    """HOMEFEED_CACHE_DIR, else $LAKEHOUSE_DATA_DIR/cache (data/ by default); read at call time."""
    env = os.environ.get("HOMEFEED_CACHE_DIR")
    return Path(env) if env else Path(os.environ.get("LAKEHOUSE_DATA_DIR", "data")) / "cache"


def read_pointer(root: str | Path) -> str | None:
    try:
        name = (Path(root) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def connect_readonly(path: Path) -> sqlite3.Connection:
    # immutable=1: the file never changes after publish, so SQLite may skip locking entirely.
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _version_from(conn: sqlite3.Connection, path: Path) -> CacheVersion:
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    try:
        return CacheVersion(
            name=meta["name"], path=path, serve_date=dt.date.fromisoformat(meta["serve_date"]),
            model_version=int(meta["model_version"]),
            created_at=dt.datetime.fromisoformat(meta["created_at"]),
            keys=int(meta["keys"]), rows=int(meta["rows"]),
            row_ids=tuple(json.loads(meta.get("row_ids", "[]"))),
            platforms=tuple(json.loads(meta["platforms"])) if "platforms" in meta else PLATFORMS)
    except KeyError as e:
        raise CacheError(f"{path.name}: meta table lacks {e}") from e


def read_version(path: str | Path) -> CacheVersion:
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"no version file {path}")
    conn = connect_readonly(path)
    try:
        return _version_from(conn, path)
    finally:
        conn.close()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


class CacheStore:
    """The publishing side: build, swap, prune, roll back. One publisher at a time (file lock)."""

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.root = Path(root)
        self.keep = keep
        self.versions_dir = self.root / VERSIONS

    # -- reading the store -------------------------------------------------------------------
    def current(self) -> CacheVersion | None:
        name = read_pointer(self.root)
        return None if name is None else read_version(self.versions_dir / f"{name}.sqlite")

    def versions(self) -> list[CacheVersion]:
        """Complete versions, newest first (by creation time; names sort the same way)."""
        out = []
        for path in self.versions_dir.glob("v*.sqlite"):
            try:
                out.append(read_version(path))
            except (sqlite3.Error, CacheError) as e:  # a foreign or damaged file: skip, say so
                log.warning("skipping %s: %s", path.name, e)
        return sorted(out, key=lambda v: (v.created_at, v.name), reverse=True)

    # -- publishing --------------------------------------------------------------------------
    def publish(self, frames: Iterable[pl.DataFrame], popular: pl.DataFrame, *,
                serve_date: dt.date | str, model_version: int,
                classes: pl.DataFrame | None = None) -> CacheVersion:
        """Build a new version from `frames` (each holding whole (user_id, platform) groups) and
        make it current; `classes`, the catalogue, gives every item its title, instructor, ...
        (`payload.class_fields`). On any error: CacheError (or the iterator's own exception),
        the temp file is removed, CURRENT and every existing version are untouched."""
        from homefeed import payload as P  # polars only on the publishing path

        if hasattr(frames, "columns"):  # a single DataFrame is one frame, not an iterable of rows
            frames = [frames]  # type: ignore[list-item]
        serve_date = _as_date(serve_date)
        created = dt.datetime.now(dt.UTC)
        # the suffix is the microsecond in hex: names sort by creation time even within a second
        name = f"v{created:%Y%m%dT%H%M%SZ}-{created.microsecond:06x}"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.versions_dir / f".{name}{_TMP_SUFFIX}"
        final = self.versions_dir / f"{name}.sqlite"
        common = {"serve_date": serve_date, "model_version": model_version, "cache_version": name,
                  "fields": P.class_fields(classes, serve_date)}

        with self._lock():
            self._remove_stale_temps()
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.executescript(_SCHEMA)
                conn.execute("BEGIN")
                keys, rows, row_ids, platforms = 0, 0, set(), set()
                for i, frame in enumerate(frames):
                    P.validate(frame, P.RECS_COLUMNS, what=f"recommendations frame {i}",
                               serve_date=serve_date, model_version=model_version)
                    if frame.height == 0:
                        continue
                    batch: list[tuple[str, str, bytes]] = []
                    for item in P.personal_payloads(frame, **common):
                        batch.append(item)
                        if len(batch) >= _INSERT_BATCH:
                            keys += _insert(conn, batch, frame_no=i)
                    keys += _insert(conn, batch, frame_no=i)
                    rows += frame.height
                    row_ids.update(frame.get_column("row_id").cast(str).unique().to_list())
                    platforms.update(frame.get_column("platform").cast(str).unique().to_list())
                if keys == 0:
                    raise CacheError("refusing to publish an empty cache (no recommendation rows); "
                                     "the current version keeps serving")
                # the simulator's cache must cover its three platforms even when a small day's
                # rows miss one; a mapped dataset's, the platforms its rows use
                if platforms <= set(PLATFORMS):
                    platforms |= set(PLATFORMS)
                pop = P.popular_payloads(popular, platforms=platforms, **common)
                conn.executemany("INSERT INTO popular VALUES (?, ?)", pop.items())
                platforms |= set(pop)
                meta = {"name": name, "serve_date": serve_date.isoformat(),
                        "model_version": str(int(model_version)), "created_at": created.isoformat(),
                        "keys": str(keys), "rows": str(rows), "row_ids": json.dumps(sorted(row_ids)),
                        "platforms": json.dumps(sorted(platforms)),
                        "format": "1"}
                conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                conn.execute("COMMIT")
                conn.close()
                _fsync_path(tmp)
                # a link, not a rename: the temp name stays until CURRENT names the version, so a
                # publisher killed in between leaves the mark of a version never made current
                os.link(tmp, final)
                _fsync_path(self.versions_dir)
                self._swap(name)
                tmp.unlink()
            except BaseException:
                conn.close()
                tmp.unlink(missing_ok=True)
                if read_pointer(self.root) != name:  # linked but never made current
                    final.unlink(missing_ok=True)
                raise
            self._prune(name)
        log.info("published %s: %d keys, %d rows", name, keys, rows)
        return read_version(final)

    def rollback(self, version: str | None = None) -> CacheVersion:
        """Point CURRENT at `version`, or at the version just older than the current one."""
        with self._lock():
            self._remove_stale_temps()  # a dead publisher's version must not be a target
            versions = self.versions()
            names = [v.name for v in versions]
            if version is None:
                cur = read_pointer(self.root)
                older = names[names.index(cur) + 1:] if cur in names else []
                if not older:
                    raise CacheError(f"no version before {cur!r} to roll back to; available: {names}")
                version = older[0]
            if version not in names:
                raise CacheError(f"unknown version {version!r}; available: {names}")
            self._swap(version)
            return versions[names.index(version)]

    # -- internals ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _swap(self, name: str) -> None:
        tmp = self.root / f"{CURRENT}.tmp"
        with open(tmp, "w") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / CURRENT)
        _fsync_path(self.root)

    def _prune(self, current: str) -> None:
        for v in self.versions()[self.keep:]:
            if v.name != current:
                v.path.unlink(missing_ok=True)
                log.info("pruned %s", v.name)

    def _remove_stale_temps(self) -> None:
        # Called under the lock: any temp file left is from a publisher that died. If its version
        # was linked but CURRENT never named it, it was never served: remove it too, or it would
        # count as a version, be a rollback target and push a served one out of `keep`.
        current = read_pointer(self.root)
        for p in self.versions_dir.glob(f".*{_TMP_SUFFIX}"):
            name = p.name[1:-len(_TMP_SUFFIX)]
            if name != current:  # the version first: the temp is what marks it unserved
                (self.versions_dir / f"{name}.sqlite").unlink(missing_ok=True)
            p.unlink(missing_ok=True)


def _insert(conn: sqlite3.Connection, batch: list[tuple[str, str, bytes]], *, frame_no: int) -> int:
    before = conn.total_changes
    try:
        conn.executemany("INSERT INTO payload VALUES (?, ?, ?)", batch)
    except sqlite3.IntegrityError as e:
        user_id, platform, _ = batch[conn.total_changes - before]  # executemany stops at the bad one
        raise CacheError(f"recommendations frame {frame_no}: key (user_id={user_id!r}, "
                         f"platform={platform!r}) already came in an earlier frame; a (user_id, "
                         f"platform) group must not be split across frames") from e
    n = len(batch)
    batch.clear()
    return n


# -- reading ---------------------------------------------------------------------------------
class _Closed(Exception):
    pass


class _Snapshot:
    """One open version. Queries and close() share a lock, so a query never sees a closed handle."""

    def __init__(self, path: Path) -> None:
        self.conn = connect_readonly(path)
        try:
            self.version = _version_from(self.conn, path)
            self.popular: dict[str, bytes] = dict(self.conn.execute("SELECT platform, body FROM popular"))
        except BaseException:
            self.conn.close()
            raise
        self.lock = threading.Lock()
        self.closed = False

    def get(self, user_id: str, platform: str) -> bytes | None:
        with self.lock:
            if self.closed:
                raise _Closed
            row = self.conn.execute("SELECT body FROM payload WHERE user_id = ? AND platform = ?",
                                    (user_id, platform)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.conn.close()


class Hit(NamedTuple):
    body: bytes
    personal: bool  # False: the popular payload ("user_id": null) for that platform
    version: CacheVersion


class CacheReader:
    """Thread-safe reader that follows CURRENT, re-checking it at most every `refresh_s` seconds."""

    def __init__(self, root: str | Path, *, refresh_s: float = 0.5) -> None:
        self.root = Path(root)
        self.refresh_s = refresh_s
        self._snap: _Snapshot | None = None
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._stat_key: tuple[int, int, int] | None = None

    @property
    def version(self) -> CacheVersion | None:
        snap = self._snapshot()
        return None if snap is None else snap.version

    def get(self, user_id: str, platform: str) -> bytes | None:
        """The personal payload of (user_id, platform), or None (unknown user or no cache)."""
        hit = self.lookup(user_id, platform)
        return hit.body if hit is not None and hit.personal else None

    def popular(self, platform: str) -> bytes:
        snap = self._snapshot()
        if snap is None:
            raise CacheError(f"no published cache under {self.root}")
        try:
            return snap.popular[platform]
        except KeyError:
            raise CacheError(f"no popular list for platform {platform!r}") from None

    def lookup(self, user_id: str, platform: str) -> Hit | None:
        """Personal payload, else the popular one, both from the same version; None if no cache."""
        while True:
            snap = self._snapshot()
            if snap is None:
                return None
            try:
                body = snap.get(user_id, platform)
            except _Closed:  # swapped between picking the snapshot and querying it: ask the new one
                continue
            if body is not None:
                return Hit(body, True, snap.version)
            pop = snap.popular.get(platform)
            return None if pop is None else Hit(pop, False, snap.version)

    def close(self) -> None:
        with self._lock:
            if self._snap is not None:
                self._snap.close()
                self._snap = None
            self._stat_key = None

    def _snapshot(self) -> _Snapshot | None:
        if time.monotonic() < self._next_check:
            return self._snap
        with self._lock:
            if time.monotonic() >= self._next_check:
                self._refresh()
                self._next_check = time.monotonic() + self.refresh_s
            return self._snap

    def _refresh(self) -> None:
        try:
            st = os.stat(self.root / CURRENT)
        except FileNotFoundError:
            return  # nothing published (or the pointer is being replaced): keep what we serve
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._stat_key:
            return
        name = read_pointer(self.root)
        if name is None or (self._snap is not None and self._snap.version.name == name):
            self._stat_key = key
            return
        try:
            new = _Snapshot(self.root / VERSIONS / f"{name}.sqlite")
        except (sqlite3.Error, OSError, CacheError) as e:  # keep serving the old one; retry later
            log.warning("cannot open cache version %s: %s", name, e)
            return
        old, self._snap, self._stat_key = self._snap, new, key
        if old is not None:
            old.close()
        log.info("serving cache version %s", name)


# -- CLI -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m homefeed.cache", description="Inspect or roll back the home-feed cache.")
    p.add_argument("command", choices=["status", "rollback"])
    p.add_argument("--cache", type=Path, default=None, help="cache root (default: $HOMEFEED_CACHE_DIR, "
                   "else $LAKEHOUSE_DATA_DIR/cache)")
    p.add_argument("--to", default=None, help="rollback target (default: the version before the current)")
    args = p.parse_args(argv)
    store = CacheStore(args.cache or default_cache_dir())
    try:
        if args.command == "rollback":
            v = store.rollback(args.to)
            print(f"CURRENT -> {v.name} (serve_date {v.serve_date}, model_version {v.model_version})")
            return 0
    except CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cur = read_pointer(store.root)
    versions = store.versions()
    if not versions:
        print(f"no versions under {store.root}")
        return 0
    print("| current | version | serve_date | model_version | created_at | keys | rows |")
    print("|---|---|---|---:|---|---:|---:|")
    for v in versions:
        print(f"| {'*' if v.name == cur else ''} | {v.name} | {v.serve_date} | {v.model_version} | "
              f"{v.created_at:%Y-%m-%d %H:%M:%S}Z | {v.keys:,} | {v.rows:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
