"""The cache asset on its own: local publish, the S3 export (loopback endpoint), never rolling
the app back to an older day, and the freshness check."""

from __future__ import annotations

import datetime as dt

import boto3
import dagster as dg
import polars as pl
from dagster_aws.s3 import S3Resource

from assets.resources import LakehouseResource
from assets.serving import build_serving_assets, cache_dir, freshness_result, popular_uri, recommendations_uri
from homefeed.cache import CacheStore
from homefeed.s3_export import latest_s3_version
from homefeed.synthetic import synthetic_popular, synthetic_recommendations
from lakehouse.io.settings import LakehouseSettings
from orchestration.partitions import daily_partitions

DAY = dt.date(2026, 10, 30)  # partition (feature date); served on DAY + 1


def write_day(settings: LakehouseSettings, day: dt.date, model_version: int = 1) -> None:
    serve = day + dt.timedelta(days=1)
    so = settings.storage_options() or None
    recs = pl.concat(list(synthetic_recommendations(30, serve_date=serve, model_version=model_version,
                                                    platforms=("bike", "tread", "app"), k=3)))
    recs.write_delta(recommendations_uri(settings), mode="append", storage_options=so,
                     delta_write_options={"partition_by": ["serve_date"]})
    synthetic_popular().with_columns(pl.lit(serve).alias("serve_date")).write_delta(
        popular_uri(settings), mode="append", storage_options=so)


def materialize(settings: LakehouseSettings, day: dt.date, s3: S3Resource, config: dict | None = None):
    _, cache, check = build_serving_assets(daily_partitions)
    return dg.materialize(
        [cache, check], partition_key=day.isoformat(), raise_on_error=False,
        selection=[cache.key], instance=dg.DagsterInstance.ephemeral(),
        resources={"lakehouse": LakehouseResource(uri=settings.uri, data_dir=settings.data_dir), "s3": s3},
        run_config={"ops": {"serving__home_screen_cache": {"config": config or {}}}})


def test_cache_is_published_locally_and_exported_to_s3(s3_env, s3_server, tmp_path):
    settings = LakehouseSettings.build(uri=s3_env, data_dir=str(tmp_path))
    write_day(settings, DAY)
    s3 = S3Resource(endpoint_url=s3_server, region_name="us-east-1")
    result = materialize(settings, DAY, s3)
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("serving__home_screen_cache")[0].metadata.items()}
    assert meta["published"] is True and meta["keys"] == 90  # 30 users x 3 platforms
    current = CacheStore(cache_dir(settings)).current()
    assert current.serve_date == DAY + dt.timedelta(days=1) and current.name == meta["cache_version"]
    bucket, prefix = s3_env[len("s3://"):].split("/", 1)
    manifest = latest_s3_version(boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1"),
                                 bucket, f"{prefix}/exports/home_screen")
    assert manifest["version"] == current.name and manifest["keys"] == 90
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {"cache_is_fresh": True}


def test_an_older_day_never_replaces_the_served_cache(tmp_path):
    settings = LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))
    older = DAY - dt.timedelta(days=1)
    write_day(settings, DAY)
    write_day(settings, older)
    assert materialize(settings, DAY, S3Resource()).success
    served = CacheStore(cache_dir(settings)).current()
    backfill = materialize(settings, older, S3Resource())
    assert backfill.success
    meta = backfill.asset_materializations_for_node("serving__home_screen_cache")[0].metadata
    assert meta["published"].value is False and "already serves" in meta["reason"].value
    assert CacheStore(cache_dir(settings)).current().name == served.name
    # a deliberate rollback to that day is a config away
    assert materialize(settings, older, S3Resource(), {"publish_older": True}).success
    assert CacheStore(cache_dir(settings)).current().serve_date == older + dt.timedelta(days=1)


def test_freshness_fails_without_a_cache_and_after_a_day_and_a_bit(tmp_path):
    settings = LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))
    assert freshness_result(cache_dir(settings)).passed is False
    write_day(settings, DAY)
    assert materialize(settings, DAY, S3Resource()).success
    created = CacheStore(cache_dir(settings)).current().created_at
    assert freshness_result(cache_dir(settings), now=created + dt.timedelta(hours=25)).passed is True
    stale = freshness_result(cache_dir(settings), now=created + dt.timedelta(hours=27))
    assert stale.passed is False and stale.metadata["age_hours"].value > 26
