"""The same ingest with the lakehouse on S3 (a real S3 HTTP endpoint on loopback)."""

from __future__ import annotations

import datetime as dt
import io

import boto3
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse.contract import BY_NAME
from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from lakehouse.landing.ingest import ingest_days
from lakehouse.landing.manifest import seal_day
from lakehouse.landing.read import LandingFileError
from tests.landing_factory import DAY0, catalogue, workout

ENTITY_NAMES = list(BY_NAME)


def put_parquet(client, bucket, key, entity, rows):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=BY_NAME[entity].schema), buf)
    client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def test_ingest_from_and_to_s3(s3_env, s3_server, tmp_path):
    settings = LakehouseSettings.build(uri=s3_env, data_dir=str(tmp_path))
    bucket = s3_env[5:].split("/")[0]
    client = boto3.client("s3", endpoint_url=s3_server)
    for entity, rows in catalogue().items():
        put_parquet(client, bucket, f"lake/landing/{entity}/date={DAY0}/part-0.parquet", entity, rows)
    put_parquet(client, bucket, f"lake/landing/workouts/date={DAY0}/part-0.parquet", "workouts",
                [workout("w1", "u1", "c1", DAY0), workout("w2", "u9", "c1", DAY0)])
    seal_day(settings.landing_uri, DAY0, ENTITY_NAMES)  # the exporter's last write, on S3 too
    report = ingest_days(settings, [DAY0])
    assert report.entities["workouts"].rows_valid == 1
    w = delta.read(settings.table_uri("bronze", "workouts"), storage_options=settings.storage_options())
    assert w["workout_id"].to_list() == ["w1"]
    assert w["_source_file"].item().startswith(f"s3://{bucket}/lake/landing/workouts/date=")
    q = delta.read(settings.table_uri("bronze", "quarantine"), storage_options=settings.storage_options())
    assert "unknown user id 'u9'" in q["reason"].item()
    # the bronze table really is on S3
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="lake/bronze/workouts/")["Contents"]]
    assert any(k.endswith(".parquet") for k in keys) and any("_delta_log" in k for k in keys)

    # an unreadable object on S3 fails the run, names the object and leaves bronze as it was
    day1 = DAY0 + dt.timedelta(days=1)
    client.put_object(Bucket=bucket, Key=f"lake/landing/workouts/date={day1}/part-0.parquet", Body=b"PAR1 garbage")
    # an exporter that lists it anyway (size and checksum of what is there)
    import hashlib
    import json
    client.put_object(Bucket=bucket, Key=f"lake/landing/_manifests/date={day1}.json", Body=json.dumps({
        "date": day1.isoformat(), "empty": [n for n in ENTITY_NAMES if n != "workouts"],
        "files": [{"path": f"workouts/date={day1}/part-0.parquet", "entity": "workouts", "rows": 3,
                   "bytes": 12, "sha256": hashlib.sha256(b"PAR1 garbage").hexdigest()}]}).encode())
    before = delta.table_version(settings.table_uri("bronze", "workouts"), settings.storage_options())
    with pytest.raises(LandingFileError, match=f"date={day1}/part-0.parquet: cannot be read as Parquet"):
        ingest_days(settings, [day1])
    assert delta.table_version(settings.table_uri("bronze", "workouts"), settings.storage_options()) == before
