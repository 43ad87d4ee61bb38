"""Idempotence and concurrent writers at the Delta layer (lakehouse.io.delta.replace_partitions).

Writers race on a fresh table (both create it) and on a table that already holds the partition
(both replace it), ROUNDS times, as threads and as processes, on a local folder and on S3
(conditional_put=etag). The race is real every round: each writer reads the table, waits at a
barrier until every writer has read the same version, and only then commits from that snapshot.
Two writers of one partition must then conflict: the loser retries on the new snapshot (at least
one retried conflict per round). Two writers of two partitions do not conflict (delta-rs checks
the partitions each read). Either way every row ends up exactly once, a replaced partition holds
one writer's rows, whole, and every writer committed exactly once.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import re
import threading
import time

import pyarrow as pa
import pytest

from lakehouse.io import delta
from lakehouse.io.settings import s3_storage_options

ROUNDS = 5
PART = "p"
N_ROWS = 4


def _rows(day: str, writer: int, n: int = N_ROWS) -> pa.Table:
    return pa.table({"id": [f"{day}-{i}" for i in range(n)], PART: [day] * n, "writer": [writer] * n})


def _replace(uri: str, day: str, writer: int, opts: dict | None, stream: bool = False) -> int:
    data = _rows(day, writer)
    if stream:
        data = pa.RecordBatchReader.from_batches(data.schema, data.to_batches())
    return delta.replace_partitions(uri, data, predicate=f"{PART} = '{day}'", partition_by=[PART],
                                    storage_options=opts)


def _prepare(uri: str, rnd: int, opts: dict | None) -> None:
    """Odd rounds race on a table that already holds the partition (old rows that must go) and
    another partition (that must stay); even rounds race to create the table."""
    if rnd % 2:
        delta.replace_partitions(uri, _rows("d1", writer=-1, n=N_ROWS + 2), predicate=f"{PART} = 'd1'",
                                 partition_by=[PART], storage_options=opts)
        delta.replace_partitions(uri, _rows("d0", writer=-1), predicate=f"{PART} = 'd0'",
                                 partition_by=[PART], storage_options=opts)


def _check(uri: str, rnd: int, days: list[str], opts: dict | None) -> tuple[int, int, int]:
    """Assert one copy of every row; returns (expected, present, distinct ids)."""
    df = delta.read(uri, storage_options=opts)
    expected = {f"{d}-{i}" for d in days for i in range(N_ROWS)} | (
        {f"d0-{i}" for i in range(N_ROWS)} if rnd % 2 else set())
    ids = df["id"].to_list()
    assert set(ids) == expected, f"round {rnd}: {sorted(ids)}"
    assert len(ids) == len(expected), f"round {rnd}: duplicated rows {sorted(ids)}"
    for d in days:  # a replaced partition is one writer's rows, whole
        writers = df.filter(df[PART] == d)["writer"].unique().to_list()
        assert len(writers) == 1 and writers[0] >= 0, f"round {rnd}, {d}: writers {writers}"
    return len(expected), len(ids), len(set(ids))


# ------------------------------------------------------------------------------ where and how

@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path, fault_drill):
    """(table root, storage options) on a local folder or on the S3 test server."""
    fault_drill.fault += f" ({request.param})"  # one row per storage in the drill's table
    if request.param == "local":
        return str(tmp_path / "lake"), None
    uri = request.getfixturevalue("s3_env")
    return uri, s3_storage_options()


class _Conflicts(logging.Handler):
    """Counts the commit conflicts that replace_partitions lost and retried (its warnings)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.tables: list[str] = []  # the table of each retried conflict

    def emit(self, record):
        self.messages.append(record.getMessage().split(": ", 2)[-1])
        self.tables.append(str(record.args[0]) if record.args else "")


def _listen() -> _Conflicts:
    handler = _Conflicts()
    logging.getLogger("lakehouse.io.delta").addHandler(handler)
    return handler


class _FromOneSnapshot:
    """Replaces `lakehouse.io.delta.write_deltalake` so that a writer's first commit attempt of a
    round waits at `barrier` until every writer is there (each has created the table if it had
    to: racing creators may both commit), reads the table, waits again until every writer has
    read it, and then commits from that snapshot: all writers start from the same version, and
    the ones that come second commit against a table that moved since they read it. Later
    attempts (retries) are left alone. Records the version each first attempt read (`read[table]`)."""

    def __init__(self, barrier) -> None:
        self.barrier, self.real = barrier, delta.write_deltalake
        self.local = threading.local()
        self.read: dict[str, list[int]] = {}

    def new_round(self) -> None:
        self.local.raced = False

    def __call__(self, table_or_uri, data, **kw):
        if getattr(self.local, "raced", False):
            return self.real(table_or_uri, data, **kw)
        self.local.raced = True
        uri = str(table_or_uri)
        # every writer has created the table if it had to (racing creators may add a commit
        # of their own), so all of them read one version ...
        self.barrier.wait(timeout=60)
        snapshot = delta.DeltaTable(uri, storage_options=kw.get("storage_options"))
        self.read.setdefault(uri, []).append(snapshot.version())
        self.barrier.wait(timeout=60)  # ... before any of them commits
        return self.real(snapshot, data, **kw)


def _race_threads(root: str, opts, days: list[str]) -> tuple[list[str], dict[str, list[int]]]:
    """ROUNDS races of len(days) threads (writer i replaces days[i]), each commit made from the
    snapshot every writer read; returns (errors, versions read per table)."""
    errors: list[str] = []
    read: dict[str, list[int]] = {}
    real = delta.write_deltalake
    for rnd in range(ROUNDS):
        uri = f"{root}/race{rnd}"
        _prepare(uri, rnd, opts)
        synced = _FromOneSnapshot(threading.Barrier(len(days)))

        def write(i: int) -> None:
            synced.new_round()
            try:
                _replace(uri, days[i], i, opts)
            except Exception as exc:  # the assertion below reports it
                errors.append(f"{type(exc).__name__}: {exc}")

        delta.write_deltalake = synced  # the writer threads' commits only
        try:
            threads = [threading.Thread(target=write, args=(i,)) for i in range(len(days))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
        finally:
            delta.write_deltalake = real
        read.update(synced.read)
    return errors, read


def _process_writer(root: str, opts, day: str, writer: int, barrier, snapshot_barrier, out) -> None:
    """One writer process: ROUNDS replaces, each released by the shared barrier and committed
    from the snapshot every writer read (`snapshot_barrier`)."""
    handler = _listen()
    synced = _FromOneSnapshot(snapshot_barrier)
    delta.write_deltalake = synced  # this process only
    for rnd in range(ROUNDS):
        barrier.wait(timeout=120)
        synced.new_round()
        try:
            _replace(f"{root}/race{rnd}", day, writer, opts)
            out.put((writer, rnd, None))
        except Exception as exc:
            out.put((writer, rnd, f"{type(exc).__name__}: {exc}"))
    out.put((writer, -1, (handler.messages, handler.tables, synced.read)))


def _race_processes(root: str, opts, days: list[str]) -> tuple[list[str], list[str], list[str], dict]:
    """The same races between processes (spawned: no fork of a process running threads).
    Returns (errors, conflict messages, their tables, versions read per table)."""
    for rnd in range(ROUNDS):
        _prepare(f"{root}/race{rnd}", rnd, opts)
    ctx = mp.get_context("spawn")
    barrier, snapshot_barrier, out = ctx.Barrier(len(days)), ctx.Barrier(len(days)), ctx.Queue()
    procs = [ctx.Process(target=_process_writer, args=(root, opts, d, i, barrier, snapshot_barrier, out))
             for i, d in enumerate(days)]
    for p in procs:
        p.start()
    errors, conflicts, tables, read = [], [], [], {}
    for _ in range(len(days) * (ROUNDS + 1)):
        writer, rnd, what = out.get(timeout=240)
        if rnd < 0:
            conflicts += what[0]
            tables += what[1]
            for uri, versions in what[2].items():
                read.setdefault(uri, []).extend(versions)
        elif what:
            errors.append(what)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return errors, conflicts, tables, read


# ------------------------------------------------------------------------------ the tests

def test_the_s3_test_server_lets_one_of_racing_conditional_puts_win(s3_server):
    """A Delta commit on S3 is a put with If-None-Match: * (conditional_put=etag), which S3
    makes atomic. Racing puts of one key, with thread switches forced often (as under load):
    exactly one wins each key (moto alone let 9 of 200 keys have two winners; tests/conftest.py
    locks its checked writes)."""
    import sys

    import boto3
    import botocore

    def client():
        return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    client().create_bucket(Bucket="conditional-puts")
    racers = [client() for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        winners = []
        for key in range(100):
            won: list[int] = []
            barrier = threading.Barrier(len(racers))

            def put(i: int) -> None:
                barrier.wait(timeout=30)
                try:
                    racers[i].put_object(Bucket="conditional-puts", Key=f"k{key}", Body=b"x" * 64,
                                         IfNoneMatch="*")
                    won.append(i)
                except botocore.exceptions.ClientError as exc:
                    assert exc.response["Error"]["Code"] == "PreconditionFailed", exc

            threads = [threading.Thread(target=put, args=(i,)) for i in range(len(racers))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            winners.append(len(won))
    finally:
        sys.setswitchinterval(interval)
    assert winners == [1] * len(winners), [k for k, w in enumerate(winners) if w != 1]


RACES = [
    pytest.param("threads", ["d1", "d1"], marks=pytest.mark.fault("two writers of one partition at once"),
                 id="same-partition-threads"),
    pytest.param("processes", ["d1", "d1"], marks=pytest.mark.fault("two writer processes of one partition"),
                 id="same-partition-processes"),
    pytest.param("threads", ["d1", "d2"], marks=pytest.mark.fault("two writers of two partitions at once"),
                 id="two-partitions-threads"),
    pytest.param("processes", ["d1", "d2"], marks=pytest.mark.fault("two writer processes of two partitions"),
                 id="two-partitions-processes"),
]


@pytest.mark.parametrize("how, days", RACES)
def test_concurrent_writers_leave_one_copy(where, how, days, fault_drill):
    root, opts = where
    handler = _listen()
    t0 = time.perf_counter()
    fault_drill.injected()
    try:
        if how == "threads":
            (errors, read), conflicts, tables = _race_threads(root, opts, days), handler.messages, handler.tables
        else:
            errors, conflicts, tables, read = _race_processes(root, opts, days)
    finally:
        logging.getLogger("lakehouse.io.delta").removeHandler(handler)
    assert not errors, errors  # every writer landed, conflicts included
    fault_drill.recovered()
    for rnd in range(ROUNDS):
        uri = f"{root}/race{rnd}"
        # the race was real: every writer read the same version before anyone committed ...
        (version_read,) = set(read[uri])
        assert len(read[uri]) == len(days), (rnd, read[uri])
        # ... and each committed exactly once (a lost commit retried, none dropped)
        assert delta.table_version(uri, opts) == version_read + len(days), rnd
        retried = tables.count(uri)
        if days[0] == days[1]:  # one partition: the second commit must conflict and be retried
            assert retried >= 1, f"round {rnd}: no commit conflict was retried ({conflicts})"
        else:  # two partitions: both commits land as they are
            assert retried == 0, f"round {rnd}: {conflicts}"
    totals = [_check(f"{root}/race{rnd}", rnd, sorted(set(days)), opts) for rnd in range(ROUNDS)]
    fault_drill.rows(expected=sum(t[0] for t in totals), present=sum(t[1] for t in totals),
                     distinct=sum(t[2] for t in totals))
    fault_drill.detail.update({
        "storage": "s3" if root.startswith("s3://") else "local", "writers": how, "rounds": ROUNDS,
        "conflicts_retried": len(conflicts), "conflict_errors": sorted(set(conflicts)),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@pytest.mark.fault("same partition replaced twice")
def test_replacing_a_partition_again_keeps_one_copy(where, fault_drill):
    root, opts = where
    uri = f"{root}/twice"
    _replace(uri, "d0", 0, opts)
    _replace(uri, "d1", 0, opts)
    version = delta.table_version(uri, opts)
    fault_drill.injected()
    _replace(uri, "d1", 1, opts)
    _replace(uri, "d1", 2, opts, stream=True)  # a RecordBatchReader replaces the same way
    fault_drill.recovered()
    assert delta.table_version(uri, opts) == version + 2
    df = delta.read(uri, storage_options=opts)
    assert sorted(df["id"].to_list()) == sorted(f"{d}-{i}" for d in ("d0", "d1") for i in range(N_ROWS))
    assert df.filter(df[PART] == "d1")["writer"].unique().to_list() == [2]
    assert df.filter(df[PART] == "d0")["writer"].unique().to_list() == [0]
    fault_drill.rows(expected=2 * N_ROWS, present=df.height, distinct=df["id"].n_unique())


# ------------------------------------------------------------------------------ losing on purpose

def _stale_writes(monkeypatch, uri: str, opts, lose: int) -> list[int]:
    """Make the next `lose` write attempts lose a real commit conflict: each starts from a
    snapshot taken just before a competitor replaces the same partition. Returns a counter."""
    real = delta.write_deltalake
    attempts = [0]

    def losing_write(table_or_uri, data, **kw):
        attempts[0] += 1
        if attempts[0] > lose:
            return real(table_or_uri, data, **kw)
        stale = delta.DeltaTable(uri, storage_options=delta.delta_options(uri, opts))
        real(uri, _rows("d1", writer=9), mode="overwrite", predicate=f"{PART} = 'd1'",
             storage_options=delta.delta_options(uri, opts))
        return real(stale, data, **kw)

    monkeypatch.setattr(delta, "write_deltalake", losing_write)
    monkeypatch.setattr(delta, "COMMIT_BACKOFF_S", 0.01)
    return attempts


@pytest.mark.fault("commit conflict retried")
def test_a_lost_commit_conflict_is_retried(where, monkeypatch, fault_drill):
    root, opts = where
    uri = f"{root}/conflict"
    _replace(uri, "d1", 0, opts)
    attempts = _stale_writes(monkeypatch, uri, opts, lose=2)
    handler = _listen()
    fault_drill.injected()
    try:
        _replace(uri, "d1", 1, opts)
    finally:
        logging.getLogger("lakehouse.io.delta").removeHandler(handler)
    fault_drill.recovered()
    assert attempts[0] == 3 and len(handler.messages) == 2
    df = delta.read(uri, storage_options=opts)
    assert sorted(df["id"].to_list()) == [f"d1-{i}" for i in range(N_ROWS)]
    assert df["writer"].unique().to_list() == [1]  # the retried write won, whole
    fault_drill.rows(expected=N_ROWS, present=df.height, distinct=df["id"].n_unique())
    fault_drill.detail["conflict_errors"] = sorted(set(handler.messages))


@pytest.mark.fault("commit conflicts that never stop")
def test_giving_up_names_the_table_and_the_conflict(tmp_path, monkeypatch, fault_drill):
    uri = str(tmp_path / "lake" / "given_up")
    _replace(uri, "d1", 0, None)
    real = delta.write_deltalake
    attempts = _stale_writes(monkeypatch, uri, None, lose=100)
    fault_drill.injected()
    gave_up = rf"{re.escape(uri)}: commit lost to a conflicting concurrent write .* 3 times"
    with pytest.raises(delta.ConcurrentWriteError, match=gave_up) as err:
        delta.replace_partitions(uri, _rows("d1", 1), predicate=f"{PART} = 'd1'", partition_by=[PART],
                                 retries=2)
    assert attempts[0] == 3
    assert isinstance(err.value.__cause__, delta.CommitFailedError)
    fault_drill.detail["error"] = f"{type(err.value).__name__}: {err.value}"
    # a stream is consumed by the first try: no retry, and the error says to re-run
    attempts[0] = 0
    reader = pa.RecordBatchReader.from_batches(_rows("d1", 1).schema, _rows("d1", 1).to_batches())
    resend = rf"{re.escape(uri)}: .*cannot be re-sent: re-run the step"
    with pytest.raises(delta.ConcurrentWriteError, match=resend):
        delta.replace_partitions(uri, reader, predicate=f"{PART} = 'd1'", partition_by=[PART])
    assert attempts[0] == 1
    # nothing was lost meanwhile: the competitor's last replace is the partition, whole
    df = delta.read(uri)
    assert df.height == N_ROWS and df["writer"].unique().to_list() == [9]
    # the competitor stops: the next run lands
    monkeypatch.setattr(delta, "write_deltalake", real)
    _replace(uri, "d1", 1, None, stream=True)
    fault_drill.recovered()
    df = delta.read(uri)
    assert df.height == N_ROWS and df["writer"].unique().to_list() == [1]
    fault_drill.rows(expected=N_ROWS, present=df.height, distinct=df["id"].n_unique())
