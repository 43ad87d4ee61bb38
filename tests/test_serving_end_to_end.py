"""Serving end to end on tiny data, through real Dagster runs: no champion -> clear failure;
train + promote; the daily chain (ingest .. inference on Ray .. cache); a failed re-scoring
leaves yesterday's rows and cache in place; the new-champion sensor asks for a re-score."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import polars as pl
import pytest

from lakehouse.io import delta
from tests.pipeline_runs import DAY1 as START
from tests.pipeline_runs import E2E_DAYS as DAYS
from tests.pipeline_runs import TINY_MODEL, run_train_job

pytestmark = pytest.mark.slow
LAST = (START + dt.timedelta(days=DAYS - 1)).isoformat()


def run(settings, instance, job: str, tags: dict, run_config: dict | None = None, only=None):
    from orchestration.definitions import build_definitions

    return build_definitions(settings).resolve_job_def(job).execute_in_process(
        instance=instance, tags=tags, run_config=run_config, raise_on_error=False,
        asset_selection=only)


def failure_text(result) -> str:
    return " ".join(str(e.event_specific_data.error) for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE")


def test_daily_chain_scores_publishes_and_survives_a_failed_rescore(built_copy, monkeypatch):
    from assets.serving import cache_dir, recommendations_uri
    from homefeed.cache import CacheReader, CacheStore
    from orchestration.sensors import new_champion_sensor

    s = built_copy  # the tiny lakehouse, every day built by the backfill (conftest `tiny_built`)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    instance = dg.DagsterInstance.ephemeral()
    before_last = (START + dt.timedelta(days=DAYS - 2)).isoformat()

    # no champion yet: inference does not run and says so; nothing is written
    none = run(s, instance, "rescore_job", {"dagster/partition": before_last})
    assert not none.success and "no champion model" in failure_text(none)
    assert not delta.table_exists(recommendations_uri(s))

    assert run_train_job(s, instance, TINY_MODEL).success

    # the daily chain for the last day, as the schedule (or its retry) runs it: Ray actors score,
    # cache published
    daily = run(s, instance, "daily_recommendations_job", {"dagster/partition": LAST})
    assert daily.success, failure_text(daily)
    serve = START + dt.timedelta(days=DAYS)
    recs = pl.read_delta(recommendations_uri(s))
    assert set(recs["serve_date"]) == {serve}
    assert {"for_you", "morning", "evening"} <= set(recs["row_id"])
    assert set(recs["platform"]) <= {"bike", "tread", "app"} and "app" in set(recs["platform"])
    assert recs.group_by("user_id", "platform", "row_id").len()["len"].max() <= 10
    meta = {k: v.value for k, v in daily.asset_materializations_for_node("serving__recommendations")[0].metadata.items()}
    assert meta["ray_workers"] >= 1 and meta["scores"] > 0 and meta["model_version"] == 1
    checks = {e.check_name: e.passed for e in daily.get_asset_check_evaluations()}
    assert checks["cache_is_fresh"] is True
    # retrieve then rank: the day's candidate index, made by the retrieval model for this ranker
    index = {k: v.value for k, v in daily.asset_materializations_for_node("serving__candidate_index")[0].metadata.items()}
    assert index["retrieval_version"] == 1 and index["ranker_version"] == 1 and index["files"] >= 2
    assert meta["retrieval"].startswith("top 200 of candidate_index")
    assert "affinities" not in meta["retrieval"]  # off by default

    store = CacheStore(cache_dir(s))
    published = store.current()
    assert published is not None and published.serve_date == serve
    reader = CacheReader(cache_dir(s), refresh_s=0)
    user = recs["user_id"][0]
    platform = recs.filter(pl.col("user_id") == user)["platform"][0]
    screen = json.loads(reader.get(user, platform))
    assert screen["source"] == "personal" and screen["rows"][0]["row_id"] == "for_you"
    expected = (recs.filter((pl.col("user_id") == user) & (pl.col("platform") == platform)
                            & (pl.col("row_id") == "for_you")).sort("rank")["class_id"].to_list())
    assert [i["class_id"] for i in screen["rows"][0]["items"]] == expected
    # readable: the card fields from the catalogue; the popular score a share, not a count
    item = screen["rows"][0]["items"][0]
    bronze = pl.read_delta(f"{s.uri}/bronze/classes").filter(pl.col("class_id") == item["class_id"])
    assert item["title"] == bronze["title"][0] and item["instructor"] and isinstance(item["is_new"], bool)
    pop = json.loads(reader.popular("app"))
    assert pop["source"] == "popular" and all(0 < i["score"] <= 1 for i in pop["rows"][0]["items"])

    # a scoring run that fails midway: the Delta table and the cache are untouched
    version_before = delta.table_version(recommendations_uri(s))
    import ml.row_scorer

    def broken(self, users, taken):
        raise RuntimeError("scorer crashed")

    with monkeypatch.context() as m:
        m.setattr(ml.row_scorer.BatchScorer, "score", broken)
        failed = run(s, instance, "rescore_job", {"dagster/partition": LAST},
                     {"ops": {"serving__recommendations": {"config": {"use_ray": False}}}})
    assert not failed.success and "scorer crashed" in failure_text(failed)
    assert delta.table_version(recommendations_uri(s)) == version_before
    assert store.current().name == published.name
    assert json.loads(reader.get(user, platform)) == screen

    # fewer retrieved classes: fewer pairs scored, as many users
    recs_only = [dg.AssetKey(["serving", "recommendations"])]
    few = run(s, instance, "rescore_job", {"dagster/partition": LAST},
              {"ops": {"serving__recommendations": {"config": {"use_ray": False, "retrieve": 3}}}},
              only=recs_only)
    assert few.success, failure_text(few)
    few_meta = {k: v.value for k, v in few.asset_materializations_for_node("serving__recommendations")[0].metadata.items()}
    assert 0 < few_meta["scores"] < meta["scores"] and few_meta["users"] == meta["users"]
    # each user's strongest instructors bring the tower's best of their classes: more pairs
    affine = run(s, instance, "rescore_job", {"dagster/partition": LAST},
                 {"ops": {"serving__recommendations": {"config": {
                     "use_ray": False, "retrieve": 3, "retrieve_affinity": 2, "retrieve_affinity_classes": 2}}}},
                 only=recs_only)
    assert affine.success, failure_text(affine)
    affine_meta = {k: v.value for k, v in affine.asset_materializations_for_node("serving__recommendations")[0].metadata.items()}
    assert affine_meta["scores"] > few_meta["scores"] and affine_meta["users"] == meta["users"]
    assert "2 of each of the 2 strongest affinities" in affine_meta["retrieval"]
    version_before = delta.table_version(recommendations_uri(s))
    published, screen = store.current(), json.loads(reader.get(user, platform))

    # a corrupt index file: scoring does not run and names the file; rows and cache stay
    from pathlib import Path

    from assets.retrieval import index_root
    from ml.retrieval import index_uri

    faiss_file = sorted(Path(index_uri(index_root(s), dt.date.fromisoformat(LAST))).glob("*.faiss"))[0]
    faiss_file.write_bytes(b"not an index")
    bad = run(s, instance, "rescore_job", {"dagster/partition": LAST},
              {"ops": {"serving__recommendations": {"config": {"use_ray": False}}}}, only=recs_only)
    assert not bad.success and str(faiss_file) in failure_text(bad), failure_text(bad)
    assert delta.table_version(recommendations_uri(s)) == version_before
    assert store.current().name == published.name and json.loads(reader.get(user, platform)) == screen

    # the shared user embeddings, on their own job: one vector per active user and platform
    from assets.retrieval import embeddings_uri

    emb = run(s, instance, "user_embeddings_job", {"dagster/partition": LAST})
    assert emb.success, failure_text(emb)
    vectors = pl.read_delta(embeddings_uri(s))
    assert vectors.height > 0 and set(vectors["model_version"]) == {1}
    assert vectors["embedding"].list.len().unique().to_list() == [64]
    assert vectors.select("user_id", "platform").is_duplicated().sum() == 0

    # a new champion: the sensor asks to re-score the latest scored day, once per version
    from assets.resources import LakehouseResource, MlflowResource

    resources = {"lakehouse": LakehouseResource(uri=s.uri, data_dir=s.data_dir), "mlflow": MlflowResource()}
    ctx = dg.build_sensor_context(instance=instance, resources=resources)
    req = new_champion_sensor(ctx)
    assert isinstance(req, dg.RunRequest) and req.partition_key == LAST
    assert req.tags["lakehouse/champion"] == "1"
    again = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, resources=resources)
    assert isinstance(new_champion_sensor(again), dg.SkipReason)
