"""The S3 endpoint goes away in the middle of a bronze Delta write, then comes back.

The lakehouse reaches the S3 server only through a proxy (tests/faults/s3_proxy.py) that is cut
at an exact request of the second ingest: half-way through a data file's upload, just before the
commit's PUT to _delta_log, or after the server took the commit but before its answer got back.
The write must fail fast with an error (not hang in retries), committed rows must be exactly as
before (or, when only the answer was lost, exactly the new ones: never a mix, never twice), and
the same ingest re-run once the endpoint is back must leave every row exactly once. A short blip
during a data upload is healed by the S3 client's own retries: the write just succeeds.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

import boto3
import polars as pl
import pytest
from deltalake.exceptions import DeltaError

from lakehouse.contract import ENTITIES
from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from lakehouse.landing.ingest import ingest_days
from tests.faults.s3_proxy import CuttableProxy
from tests.landing_factory import DAY0, seal, workout, write_day, write_parquet

DAY1 = DAY0 + dt.timedelta(days=1)
WORKOUTS = "/bronze/workouts/"


def _data_put(method: str, path: str) -> bool:
    return method == "PUT" and WORKOUTS in path and path.endswith(".parquet")


def _commit_put(method: str, path: str) -> bool:
    return method == "PUT" and f"{WORKOUTS}_delta_log/" in path and path.endswith(".json")


def _expected_error(cut_at: str, retry: str, day: dt.date, commit_version: int) -> tuple[type, str]:
    """(exact type, pattern of the message without colour codes) of the error a cut write fails
    with: deltalake's own, naming the request that failed, neither wrapped nor reworded (e.g. as
    a read-only or permission problem)."""
    if cut_at == "data upload":  # the data file's PUT, given up after the client's retries
        n, timeout = (10, "60s") if retry == "defaults" else (2, "5s")  # object_store / ours
        return DeltaError, (
            rf"^Failed to parse parquet: External: Generic S3 error: Error performing PUT "
            rf"\S+{WORKOUTS}landing_date%3D{day}/part-\S+\.parquet in \S+, after {n} retries, "
            rf"max_retries: {n}, retry_timeout: {timeout} +- HTTP error: error sending request")
    # the commit's PUT of the next log entry: the proxy reset the connection
    return OSError, (rf"^Generic S3 error\s+↳ Error performing PUT \S+{WORKOUTS}_delta_log/"
                     rf"{commit_version:020d}\.json in \S+ - HTTP error\s+↳ error sending request"
                     rf".*↳ Connection reset by peer \(os error 104\)$")


# (change, where the cut falls, which request, proxy mode, client retry settings, restored after s)
SCENARIOS = [
    pytest.param("new day", "data upload", _data_put, "mid_body", "defaults", None,
                 marks=pytest.mark.fault("S3 lost mid data-file upload"), id="new-day-mid-upload"),
    pytest.param("new day", "data upload", _data_put, "mid_body", "defaults", 0.5,
                 marks=pytest.mark.fault("S3 blip mid upload, healed by client retries"),
                 id="new-day-blip-mid-upload"),
    pytest.param("new day", "commit", _commit_put, "before", "fast", None,
                 marks=[pytest.mark.fault("S3 lost before the Delta commit"), pytest.mark.drill_only],
                 id="new-day-before-commit"),
    pytest.param("replaced day", "data upload", _data_put, "mid_body", "fast", None,
                 marks=[pytest.mark.fault("S3 lost mid upload of a replaced day"), pytest.mark.drill_only],
                 id="replace-mid-upload"),
    pytest.param("replaced day", "commit", _commit_put, "before", "fast", None,
                 marks=pytest.mark.fault("S3 lost before the commit of a replaced day"),
                 id="replace-before-commit"),
    pytest.param("replaced day", "commit answer", _commit_put, "response", "fast", None,
                 marks=pytest.mark.fault("S3 commit taken, answer lost"), id="replace-answer-lost"),
]

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def day0(s3_server, tmp_path_factory):
    """(bucket, landing folder): day 0 landed and ingested once, copied into each test's bucket
    (a full ingest through the proxy costs seconds; copying the objects, a fraction of one)."""
    bucket, landing = f"day0-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("day0") / "landing"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**S3_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
        write_day(landing, DAY0, with_catalogue=True,
                  workouts=[workout("w1", "u1", "c1", DAY0), workout("w2", "u2", "c2", DAY0)])
        ingest_days(LakehouseSettings.build(uri=f"s3://{bucket}/lake", landing_uri=str(landing),
                                            data_dir=str(landing.parent)), [DAY0])
    return bucket, landing


@pytest.fixture
def lake(s3_env, s3_server, day0, monkeypatch, tmp_path):
    """(settings, proxy, boto3 client): day 0 committed on S3, reached only through a cuttable
    proxy; landing is local, so every request through the proxy is a Delta one."""
    client = boto3.client("s3", endpoint_url=s3_server)
    bucket, prefix = s3_env[5:].split("/", 1)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=day0[0], Prefix="lake/"):
        for o in page.get("Contents", []):
            client.copy_object(Bucket=bucket, Key=prefix + o["Key"][len("lake"):],
                               CopySource={"Bucket": day0[0], "Key": o["Key"]})
    shutil.copytree(day0[1], tmp_path / "landing")
    with CuttableProxy(s3_server) as proxy:
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        settings = LakehouseSettings.build(uri=s3_env, landing_uri=str(tmp_path / "landing"),
                                           data_dir=str(tmp_path))
        yield settings, proxy, client


def _workouts(settings) -> pl.DataFrame:
    df = delta.read(settings.table_uri("bronze", "workouts"), storage_options=settings.storage_options())
    return df.select("workout_id", "minutes", "landing_date").sort("workout_id")


def _duplicated_keys(settings, names=None) -> dict[str, int]:
    """bronze table -> rows beyond one per primary key (all must be 0)."""
    out = {}
    for e in ENTITIES:
        if names is None or e.name in names:
            df = delta.read(settings.table_uri("bronze", e.name), columns=list(e.key),
                            storage_options=settings.storage_options())
            out[e.name] = df.height - df.unique().height
    return out


@pytest.mark.parametrize("change, cut_at, match, when, retry, heal_s", SCENARIOS)
def test_s3_lost_mid_write_then_back(lake, monkeypatch, fault_drill, change, cut_at, match, when, retry,
                                     heal_s):
    settings, proxy, client = lake
    for var, _ in delta.S3_CLIENT_ENV.values():  # "defaults": what production runs with
        monkeypatch.delenv(var, raising=False)
    if retry == "fast":  # bounded client retries so a cut fails in about a second
        monkeypatch.setenv("LAKEHOUSE_S3_MAX_RETRIES", "2")
        monkeypatch.setenv("LAKEHOUSE_S3_RETRY_TIMEOUT", "5s")
    landing = Path(settings.landing_uri)
    if change == "new day":
        write_day(landing, DAY1, with_catalogue=False,
                  workouts=[workout("w3", "u3", "c3", DAY1), workout("w4", "u1", "c2", DAY1, hour=9)])
        days, expected = [DAY1], {"w1": 20.0, "w2": 20.0, "w3": 20.0, "w4": 20.0}
    else:  # the export of day 0 is re-sent: one row changed, one added
        write_parquet(landing, "workouts", DAY0, [
            workout("w1", "u1", "c1", DAY0), workout("w2", "u2", "c2", DAY0, minutes=45.0),
            workout("w5", "u3", "c3", DAY0, hour=10)])
        seal(landing, DAY0)
        days, expected = [DAY0], {"w1": 20.0, "w2": 45.0, "w5": 20.0}

    uri = settings.table_uri("bronze", "workouts")
    version_before, rows_before = delta.table_version(uri, settings.storage_options()), _workouts(settings)
    assert rows_before["workout_id"].to_list() == ["w1", "w2"]  # day 0, committed before the outage

    def on_cut() -> None:
        fault_drill.injected()
        if heal_s is not None:  # the endpoint comes back by itself, while the client retries
            threading.Timer(heal_s, proxy.restore).start()

    fired = proxy.cut_on(match, when=when, on_cut=on_cut)
    t0 = time.perf_counter()
    fault_drill.detail.update({"change": change, "cut_at": cut_at, "proxy_mode": when,
                               "client_retries": retry, "outage_s": heal_s})
    if heal_s is not None:
        ingest_days(settings, days)  # no error: the client's retries outlasted the blip
        fault_drill.recovered()
        assert fired.is_set(), f"the cut at the {cut_at} never happened"
        fault_drill.detail.update({"ingest_s": round(time.perf_counter() - t0, 2),
                                   "connections_reset_while_cut": proxy.refused})
    else:
        with pytest.raises((DeltaError, OSError)) as failure:
            ingest_days(settings, days)
        fail_s = time.perf_counter() - t0
        assert fired.is_set(), f"the cut at the {cut_at} never happened: {failure.value!r}"
        err = failure.value
        want_type, want = _expected_error(cut_at, retry, days[0], version_before + 1)
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
        assert type(err) is want_type and re.search(want, text, re.S), f"{type(err).__name__}: {text}"
        fault_drill.detail.update({
            "error_class": type(err).__name__, "error": f"{type(err).__name__}: {err}",
            "fail_s": round(fail_s, 2), "connections_reset_while_cut": proxy.refused})
        assert fail_s < 60, f"the write took {fail_s:.0f} s to give up: the retry window is not bounded"

        proxy.restore()  # the endpoint is back
        after = _workouts(settings)
        version_after = delta.table_version(uri, settings.storage_options())
        if when == "response":
            # the server took the commit; the writer was told it failed. The new state, whole.
            assert version_after == version_before + 1
            assert dict(zip(after["workout_id"], after["minutes"])) == expected
        else:
            assert version_after == version_before, "a commit landed although the write failed"
            assert after.equals(rows_before), "committed rows changed although the write failed"
        assert not any(_duplicated_keys(settings, ["workouts"]).values())
        # data files uploaded before the cut stay behind as orphans: Delta never lists them
        bucket, prefix = settings.uri[5:].split("/", 1)
        objects = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/bronze/workouts/")["Contents"]
        fault_drill.detail.update({
            "parquet_objects_after_fault": sum(o["Key"].endswith(".parquet") for o in objects),
            "committed_files_after_fault": len(delta.DeltaTable(
                uri, storage_options=delta.delta_options(uri, settings.storage_options())).file_uris())})

        ingest_days(settings, days)  # the same run again, endpoint back
        fault_drill.recovered()
    final = _workouts(settings)
    assert dict(zip(final["workout_id"], final["minutes"])) == expected
    assert final.height == len(expected)
    dups = _duplicated_keys(settings)  # every bronze table, written before or after the cut
    assert not any(dups.values()), dups
    fault_drill.rows(expected=len(expected), present=final.height, distinct=final["workout_id"].n_unique())
