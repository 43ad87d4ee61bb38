"""Shared fixtures: telemetry off, a real S3 HTTP endpoint on loopback (moto server)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Telemetry of every tool off, before anything imports them.
for _k, _v in {
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DAGSTER_DISABLE_TELEMETRY": "true",
}.items():
    os.environ.setdefault(_k, _v)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _atomic_conditional_puts() -> None:
    """S3 makes a conditional put (If-None-Match: *, how delta-rs commits with conditional_put)
    atomic; moto's threaded server checks the key, then writes it, so two racing commits of one
    version could both land (one lost, seen under load in tests/faults/test_concurrent_writes.py).
    One lock around the server's checked writes gives the tests S3's guarantee."""
    import functools
    import threading

    from moto.s3.responses import S3Response

    lock = threading.Lock()
    for name in ("put_object", "_key_response_post"):  # a put; a multipart upload's completion
        method = getattr(S3Response, name)
        if getattr(method, "_atomic", False):
            continue

        @functools.wraps(method)
        def locked(self, *args, _method=method, **kwargs):
            with lock:
                return _method(self, *args, **kwargs)

        locked._atomic = True
        setattr(S3Response, name, locked)


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1: real HTTP, real S3 API, nothing leaves the machine."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    _atomic_conditional_puts()
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """Environment for a lakehouse on s3://<fresh bucket>/lake; returns the lakehouse URI."""
    import uuid

    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/lake"


# ---------------------------------------------------------------- lakehouses built by real runs
# (tests copy them before changing anything: see tests/pipeline_runs.py)

@pytest.fixture(scope="session")
def landed(tmp_path_factory) -> Path:
    """A data dir holding only the landing zone of days 1-4 (tiny, seed 11; never written to by a
    test). Day 4 is a new day for tests that need one after day 3."""
    from tests.pipeline_runs import lake_settings, simulate

    data = tmp_path_factory.mktemp("landed") / "data"
    simulate(lake_settings(data).landing_uri, days=4)
    return data


@pytest.fixture(scope="session")
def backfilled(landed, tmp_path_factory) -> Path:
    """Days 1-2 built by one range run (a backfill); tests copy it and run day 3."""
    from tests.pipeline_runs import DAY1, DAY2, assert_ok, copy_lake, run_job

    data = tmp_path_factory.mktemp("backfilled") / "data"
    s = copy_lake(landed, data)
    assert_ok(run_job(s, days=(DAY1, DAY2)))
    return data


@pytest.fixture(scope="session")
def daily_day1(landed, tmp_path_factory) -> Path:
    """Day 1 built by its own daily run (no backfill): what any complete run of day 1 commits."""
    from tests.pipeline_runs import DAY1, assert_ok, copy_lake, run_job

    data = tmp_path_factory.mktemp("daily_day1") / "data"
    assert_ok(run_job(copy_lake(landed, data), day=DAY1))
    return data


@pytest.fixture(scope="session")
def daily_days(daily_day1, tmp_path_factory) -> Path:
    """Days 1 and 2 built by one daily run each, in order (what the backfill must equal)."""
    from tests.pipeline_runs import DAY2, assert_ok, copy_lake, run_job

    data = tmp_path_factory.mktemp("daily_days") / "data"
    assert_ok(run_job(copy_lake(daily_day1, data), day=DAY2))
    return data


@pytest.fixture(scope="session")
def reference(backfilled, tmp_path_factory) -> tuple[Path, dict]:
    """The undisturbed next day: `backfilled` plus a daily run of day 3, and its tables."""
    from tests.pipeline_runs import DAY3, GOLD, assert_ok, copy_lake, day_rows, run_job, snapshot

    data = tmp_path_factory.mktemp("reference") / "data"
    s = copy_lake(backfilled, data)
    assert_ok(run_job(s, day=DAY3))
    snap = snapshot(s)
    published = {p.name for p in Path(s.uri, "gold").iterdir()}
    assert published == set(GOLD), f"gold tables changed: add their keys to GOLD ({published ^ set(GOLD)})"
    assert all(df.height for df in day_rows(snap, DAY3, on=True).values())
    return data, snap


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory):
    """The end-to-end lakehouse: the tiny landing (seed 7, 6 days) and one range run of the daily
    job over it, as a backfill runs it. Returns (data dir, the run's result); tests copy the data
    (`copy_lake`) before changing anything."""
    import datetime as dt

    from tests.pipeline_runs import DAY1, E2E_DAYS, lake_settings, run_job, simulate

    data = tmp_path_factory.mktemp("tiny_built") / "data"
    s = lake_settings(data)
    simulate(s.landing_uri, days=E2E_DAYS, seed=7)
    return data, run_job(s, days=(DAY1, DAY1 + dt.timedelta(days=E2E_DAYS - 1)))


@pytest.fixture
def built_copy(tiny_built, tmp_path, monkeypatch):
    """A copy of `tiny_built` of this test's own, with LAKEHOUSE_DATA_DIR pointing at it."""
    from tests.pipeline_runs import AMBIENT, assert_ok, copy_lake

    data, result = tiny_built
    assert_ok(result)
    s = copy_lake(data, tmp_path / "data")
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", s.data_dir)
    for k in AMBIENT:
        monkeypatch.delenv(k, raising=False)
    return s


# ---------------------------------------------------------------- Ray Train on a tiny gold lakehouse
# (tests/ml/test_ray_training.py and tests/faults/test_ray_worker_kill.py)

@pytest.fixture(scope="module")
def ray_local():
    """A local 2-CPU Ray instance for the module. Its workers read the gold joins with one polars
    thread: the row order, hence every batch, is then the same on every run, so a resumed run can
    be compared with an uninterrupted one tensor for tensor."""
    import shutil
    import tempfile

    import ray

    from ml.ray_training import init_ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # quicker polls: shorter tests
        mp.setenv("POLARS_MAX_THREADS", "1")  # inherited by the workers (see above)
        # short and absolute: Ray's Unix sockets live under it (path length limit ~107)
        temp_dir = tempfile.mkdtemp(prefix="rt_", dir="/tmp")
        init_ray(num_cpus=2, temp_dir=temp_dir)
        init_ray(num_cpus=2, temp_dir=temp_dir)  # idempotent
        try:
            yield
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_gold_lake(tmp_path_factory) -> str:
    """The tiny gold lakehouse of tests/ml (event dates E1, E2 to train on, E3 held out)."""
    from tests.ml.tiny_gold import build_lakehouse

    return build_lakehouse(tmp_path_factory.mktemp("ray_gold"))


# Session fixtures built by real pipeline runs (tens of seconds each). Under pytest-xdist (`make
# test` runs on every core, `--dist loadgroup`) each worker would build its own copy: the tests
# that use them go to one worker, and every other test stays with its module (module fixtures,
# such as a Ray instance, are then started once).
SHARED_RUNS = {"pipeline_runs": ("backfilled", "daily_day1", "daily_days", "reference"),
               "tiny_built": ("tiny_built",)}


def xdist_group(item) -> str:
    """The worker group of a test: the shared pipeline runs it needs, else its module."""
    for group, fixtures in SHARED_RUNS.items():
        if any(f in item.fixturenames for f in fixtures):
            return group
    return item.nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Group the tests for xdist (above). Tests marked `extra` (a real two-node Ray cluster, a
    270 MB import in bounded memory) cost more than `make test`'s 15 minutes can hold: they run
    with RUN_EXTRA_TESTS=1 (`make test-extra`)."""
    import os

    group = {item.nodeid: xdist_group(item) for item in items}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group[item.nodeid]))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the long groups first (the shared runs, then modules with `slow` tests), so no long
        # one is left alone at the end (make test passes --no-loadscope-reorder to keep this)
        items.sort(key=lambda item: (group[item.nodeid] not in SHARED_RUNS, not item.get_closest_marker("slow")))
    if os.environ.get("RUN_EXTRA_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="extra: run by `make test-extra` (RUN_EXTRA_TESTS=1)")
    for item in items:
        if item.get_closest_marker("extra"):
            item.add_marker(skip)
