"""Fault injection: the process publishing a home-feed cache version is SIGKILLed part-way.

Version A (600 keys) is published and served; a separate Python process then publishes a larger
version B (6,000 keys, rows generated as it goes) and is killed at one of these points:
- inserting: rows are going into the temp file (killed once the parent sees it pass 1 MiB,
             when SQLite first spills its page cache: ~15% of B's file)
- built:     B's version file is complete and in versions/, CURRENT not yet swapped
- pointer:   CURRENT.tmp names B, not yet moved over CURRENT
- swapped:   CURRENT names B, the publish has not returned (B is committed: readers get B)
The last three are too short to hit from outside, so the child wraps the step it stops at (in
the child only: homefeed has no test hooks) and says so through a file; the parent kills it there.

While and after it dies, readers in this process and in another one see A whole: every key of A
byte for byte, no key of B. The `.lock` is an flock, released by the kernel when its holder
dies, so the next publish does not wait; it removes the dead publisher's leftovers and keeps
the version count right: the half-published B never displaces A as the rollback target.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from homefeed.cache import CURRENT, VERSIONS, CacheReader, CacheStore, read_pointer

ROOT = Path(__file__).resolve().parents[2]
A_USERS, A_PLATFORMS = 300, ("bike", "app")
B_USERS, B_PLATFORMS = 2_000, ("bike", "app", "tread")
KILL_AT_BYTES = 1 << 20  # the temp file passes this a fraction of the way into B's inserts
TMP_GLOB = ".*.sqlite.tmp"
PAUSE_S = 60  # a paused child gives up after this if nobody kills it
READ_GAP_S = 0.05  # between a reader's passes: leave CPU to the publisher being killed

POINTS = {
    "inserting": "cache publisher killed while inserting rows",
    "built": "cache publisher killed with the version built, before the swap",
    "pointer": "cache publisher killed with CURRENT.tmp written, before it replaces CURRENT",
}


# -- the data (the child and the parent generate the same frames) ----------------------------
def _frames(which: str):
    # imported here, not at the top: the reader process never loads polars
    from homefeed.synthetic import synthetic_recommendations
    from tests.homefeed.data import SERVE_DATE

    if which == "a":
        return synthetic_recommendations(A_USERS, platforms=A_PLATFORMS, k=5, seed=1, model_version=1,
                                         serve_date=SERVE_DATE, chunk_users=100)
    # lazy, small chunks: rows keep arriving for a while, as from a lakehouse scan
    return synthetic_recommendations(B_USERS, platforms=B_PLATFORMS, k=10, seed=2, model_version=2,
                                     serve_date=SERVE_DATE, chunk_users=250)


def _publish(store: CacheStore, which: str):
    from homefeed.synthetic import synthetic_popular
    from tests.homefeed.data import SERVE_DATE

    return store.publish(_frames(which), synthetic_popular(k=8, seed=7), serve_date=SERVE_DATE,
                         model_version=1 if which == "a" else 2)


def b_only_keys() -> list[tuple[str, str]]:
    """Keys that exist in B and not in A: A's users on B's extra platform, B's extra users."""
    return ([(f"u{i:07d}", "tread") for i in range(A_USERS)]
            + [(f"u{i:07d}", p) for i in range(A_USERS, 2 * A_USERS) for p in A_PLATFORMS])


def bodies(path: Path) -> dict[tuple[str, str], bytes]:
    """Every payload of one version file, read straight from it (not through CURRENT)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {(u, p): b for u, p, b in conn.execute("SELECT user_id, platform, body FROM payload")}
    finally:
        conn.close()


def check_pass(reader: CacheReader, expected: dict, absent: list, version: str) -> tuple[int, list[str]]:
    """One read of every expected key and every key that must be absent: (keys intact, errors)."""
    intact, errors = 0, []
    if reader.version is None or reader.version.name != version:
        errors.append(f"serving {reader.version and reader.version.name}, expected {version}")
    for key, body in expected.items():
        got = reader.get(*key)
        if got == body:
            intact += 1
        else:
            errors.append(f"{key}: {'missing' if got is None else 'other bytes'}")
    errors += [f"{key}: present, but only the killed version has it" for key in absent
               if reader.get(*key) is not None]
    return intact, errors


# -- the child processes ---------------------------------------------------------------------
def _pause(signal_file: str, note: str) -> None:
    Path(signal_file + ".part").write_text(note)
    os.replace(signal_file + ".part", signal_file)
    time.sleep(PAUSE_S)
    os._exit(3)  # never go on with the publish: the parent was meant to kill us


def publisher_main(root: str, point: str, signal_file: str) -> None:
    """Publish B into `root`, stopping (to be killed) at `point` when it is a pause point."""
    from homefeed import cache

    if point == "built":
        cache.CacheStore._swap = lambda self, name: _pause(signal_file, name)
    elif point == "pointer":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == CURRENT:
                _pause(signal_file, Path(src).read_text().strip())
            return real_replace(src, dst, *args, **kwargs)

        cache.os.replace = replace
    elif point == "swapped":
        real_swap = cache.CacheStore._swap

        def swap_then_pause(self, name):
            real_swap(self, name)
            _pause(signal_file, name)

        cache.CacheStore._swap = swap_then_pause
    _publish(CacheStore(root), "b")
    sys.exit(4)  # a finished publish means the kill came too late


def reader_main(root: str, version: str, stop_file: str, out_file: str) -> None:
    """Read every key of `version` through CURRENT until `stop_file` appears, then once more."""
    expected = bodies(Path(root) / VERSIONS / f"{version}.sqlite")
    absent = b_only_keys()
    reader = CacheReader(root, refresh_s=0)
    passes, intact, errors = 0, 0, []
    while True:
        stopping = os.path.exists(stop_file)
        intact, errs = check_pass(reader, expected, absent, version)
        errors += errs
        passes += 1
        if passes == 1:
            Path(out_file + ".ready").touch()
        if stopping:
            break
        time.sleep(READ_GAP_S)
    Path(out_file).write_text(json.dumps({"passes": passes, "intact": intact, "errors": errors[:5]}))


def _spawn(func: str, *args: str) -> subprocess.Popen:
    code = f"import sys; from tests.faults.test_cache_publish_kill import {func}; {func}(*sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT)


def _wait_for(cond, what: str, proc: subprocess.Popen | None = None, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert proc is None or proc.poll() is None, f"child exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def lock_is_free(root: Path) -> bool:
    with open(root / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def _temp_size(versions: Path) -> int:
    size = 0
    for p in versions.glob(TMP_GLOB):
        with contextlib.suppress(FileNotFoundError):  # removed between glob and stat
            size = max(size, p.stat().st_size)
    return size


class ReaderThread(threading.Thread):
    """A reader in this process, checking A whole in a loop until stopped, then once more."""

    def __init__(self, reader: CacheReader, expected: dict, absent: list, version: str) -> None:
        super().__init__(daemon=True, name="cache-reader")
        self.args = (reader, expected, absent, version)
        self.stop = threading.Event()
        self.passes, self.errors = 0, []

    def run(self) -> None:
        while True:
            stopping = self.stop.is_set()
            self.errors += check_pass(*self.args)[1]
            self.passes += 1
            if stopping:
                return
            time.sleep(READ_GAP_S)


def kill_publisher(tmp_path: Path, root: Path, point: str, fault_drill) -> tuple[str | None, dict]:
    """Start the publisher of B, kill it at `point`; return its version name (if it got one)."""
    versions = root / VERSIONS
    signal_file = tmp_path / "paused"
    started = time.perf_counter()
    proc = _spawn("publisher_main", str(root), point, str(signal_file))
    try:
        if point == "inserting":
            _wait_for(lambda: _temp_size(versions) > KILL_AT_BYTES, "the temp file to grow", proc)
            name = None
        else:
            _wait_for(signal_file.exists, f"the publisher to stop at {point!r}", proc)
            name = signal_file.read_text()
        assert not lock_is_free(root), "the publisher should hold the lock when it is killed"
        size = _temp_size(versions)
        os.kill(proc.pid, signal.SIGKILL)
        fault_drill.injected()
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return name, {"kill_point": point, "killed_after_s": round(time.perf_counter() - started, 2),
                  "temp_bytes_at_kill": size}


# -- the tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("point", [pytest.param(p, marks=pytest.mark.fault(f), id=p)
                                   for p, f in POINTS.items()])
def test_publisher_killed_before_the_swap(tmp_path, point, fault_drill):
    root = tmp_path / "cache"
    store = CacheStore(root, keep=2)
    a = _publish(store, "a")
    expected, absent = bodies(a.path), b_only_keys()
    assert len(expected) == A_USERS * len(A_PLATFORMS)

    # readers of A: one in another process (ready once it has read A whole), one here
    stop_file, out_file = tmp_path / "stop", tmp_path / "reader.json"
    reader_proc = _spawn("reader_main", str(root), a.name, str(stop_file), str(out_file))
    shared = CacheReader(root, refresh_s=0)  # refresh_s=0: every get() re-checks CURRENT
    thread = ReaderThread(shared, expected, absent, a.name)
    try:
        _wait_for(Path(str(out_file) + ".ready").exists, "the reader process", reader_proc)
        thread.start()
        name, detail = kill_publisher(tmp_path, root, point, fault_drill)

        # the killed publish changed nothing readers see; what it left is where it stopped
        assert read_pointer(root) == a.name
        left = sorted(p.name for p in (root / VERSIONS).iterdir())
        if point == "inserting":
            assert len(left) == 2 and f"{a.name}.sqlite" in left and left[0].endswith(".sqlite.tmp"), left
        else:
            assert f"{name}.sqlite" in left, left  # complete, never made current
        if point == "pointer":
            assert (root / f"{CURRENT}.tmp").read_text().strip() == name
        fresh = CacheReader(root, refresh_s=0)
        intact, errors = check_pass(fresh, expected, absent, a.name)
        fresh.close()
        fault_drill.rows(expected=len(expected), present=intact, distinct=intact)
        assert errors == [], errors[:5]

        stop_file.touch()  # both readers do one more pass after this, all after the kill
        thread.stop.set()
        thread.join(30)
        assert reader_proc.wait(30) == 0
    finally:
        stop_file.touch()
        thread.stop.set()
        if reader_proc.poll() is None:
            reader_proc.kill()
            reader_proc.wait()
    seen = json.loads(out_file.read_text())
    assert seen["errors"] == [] and seen["intact"] == len(expected), seen
    assert thread.errors == [], thread.errors[:5]
    assert seen["passes"] >= 2 and thread.passes >= 2

    # the next publish: not blocked by the dead publisher's lock, cleans up after it
    assert (root / ".lock").exists() and lock_is_free(root)
    t0 = time.perf_counter()
    b = _publish(store, "b")
    publish_s = time.perf_counter() - t0
    assert read_pointer(root) == b.name
    fault_drill.recovered()
    assert sorted(p.name for p in (root / VERSIONS).iterdir()) == sorted(
        f"{n}.sqlite" for n in (a.name, b.name))  # the dead publisher's temp and version are gone
    assert not (root / f"{CURRENT}.tmp").exists()
    assert [v.name for v in store.versions()] == [b.name, a.name]  # A stays the rollback target
    assert b.keys == B_USERS * len(B_PLATFORMS)
    got = bodies(b.path)
    assert len(got) == b.keys
    intact, errors = check_pass(shared, got, [], b.name)  # the reader that served A moved to B
    assert errors == [] and intact == b.keys, errors[:5]
    shared.close()
    assert store.rollback().name == a.name
    fault_drill.detail.update(detail, publish_b_s=round(publish_s, 2), b_bytes=b.path.stat().st_size,
                              reader_passes=thread.passes, reader_process_passes=seen["passes"])
    if point == "inserting":  # killed well before the end of the inserts
        assert detail["temp_bytes_at_kill"] < b.path.stat().st_size / 2, detail


@pytest.mark.fault("cache publisher killed after the swap, before it returned")
def test_publisher_killed_after_the_swap(tmp_path, fault_drill):
    """B is committed once CURRENT names it: readers get B whole, and B stays a version even
    though its publisher died before finishing (a rollback, then a publish, keep it)."""
    root = tmp_path / "cache"
    store = CacheStore(root, keep=3)
    a = _publish(store, "a")
    name, detail = kill_publisher(tmp_path, root, "swapped", fault_drill)
    assert read_pointer(root) == name
    temp = root / VERSIONS / f".{name}.sqlite.tmp"
    assert temp.exists()  # the publisher died before dropping its temp name

    expected = bodies(root / VERSIONS / f"{name}.sqlite")
    assert len(expected) == B_USERS * len(B_PLATFORMS)
    intact, errors = check_pass(CacheReader(root, refresh_s=0), expected, [], name)
    fault_drill.rows(expected=len(expected), present=intact, distinct=intact)
    assert errors == [], errors[:5]

    assert lock_is_free(root)
    assert store.rollback().name == a.name  # the dead publisher's version counts as published
    assert not temp.exists() and (root / VERSIONS / f"{name}.sqlite").exists()
    c = _publish(store, "b")
    fault_drill.recovered()
    assert [v.name for v in store.versions()] == [c.name, name, a.name]
    assert sorted(p.name for p in (root / VERSIONS).iterdir()) == sorted(
        f"{n}.sqlite" for n in (a.name, name, c.name))
    assert store.rollback().name == name
    fault_drill.detail.update(detail)
