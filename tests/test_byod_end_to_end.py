"""Bring your own data, end to end through real Dagster runs: a generated listening log in its
own shape (CSV events with epoch-ms times, JSONL users, Parquet tracks), the documented example
mapping, then import -> dbt mapped models -> gold -> checks -> training on Ray -> evaluation
without an oracle -> batch inference -> cache, with no code change."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from ml.datasets import MAPPED, dataset_for
from tests.pipeline_runs import train_run_config

pytestmark = pytest.mark.slow

START = dt.date(2026, 9, 1)
DAYS = 8
LAST = (START + dt.timedelta(days=DAYS - 1)).isoformat()
MAPPING = Path(__file__).resolve().parents[1] / "examples" / "listening" / "mapping.yaml"
TINY_MODEL = {"train_days": 5, "valid_days": 1, "epochs": 2, "batch_size": 256,
              "embedding_dim": 8, "bottom_mlp": [16, 8], "top_mlp": [32], "lr": 0.005}


def run(settings, instance, job: str, tags: dict | None = None, run_config: dict | None = None):
    from orchestration.definitions import build_definitions

    return build_definitions(settings).resolve_job_def(job).execute_in_process(
        instance=instance, tags=tags or {}, run_config=run_config, raise_on_error=False)


def failures(result) -> str:
    return " ".join(str(e.event_specific_data.error) for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE")


@pytest.fixture
def byod_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LAKEHOUSE_MAPPING", str(MAPPING))
    for k in ("LAKEHOUSE_URI", "LANDING_URI", "LAKEHOUSE_DUCKDB_PATH", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    subprocess.run([sys.executable, "-m", "simulator", "external", "--out", str(tmp_path / "listening_source"),
                    "--days", str(DAYS), "--start-date", START.isoformat(), "--users", "120",
                    "--items", "80", "--seed", "3"], check=True, capture_output=True)
    return LakehouseSettings.from_env()


def test_mapped_dataset_runs_the_whole_flow(byod_settings):
    from assets.serving import cache_dir, recommendations_uri
    from homefeed.cache import CacheReader, CacheStore

    s = byod_settings
    assert dataset_for(s) == MAPPED
    instance = dg.DagsterInstance.ephemeral()
    before_last = (START + dt.timedelta(days=DAYS - 2)).isoformat()
    lake = run(s, instance, "daily_lakehouse_job", {"dagster/asset_partition_range_start": START.isoformat(),
                                                    "dagster/asset_partition_range_end": before_last})
    assert lake.success, failures(lake)

    # bronze in the mapped contract; gold with the declared side and context columns
    inter = delta.read(s.table_uri("bronze", "mapped_interactions"))
    assert set(inter["platform"]) == {"phone", "desktop", "speaker"}
    assert {"ctx_network", "ctx_battery"} <= set(inter.columns)
    te = delta.read(s.table_uri("gold", "training_examples"))
    takes = inter.filter(pl.col("event_type") == "take").height
    assert te.filter(pl.col("label_take") == 1).height == takes
    assert te.filter(pl.col("label_complete") == 1).height > 0  # full_listen -> the complete head
    assert "ctx_network" in te.columns
    uf = delta.read(s.table_uri("gold", "user_features_daily"))
    assert {"user_attr_country", "user_attr_age", "last_ctx_network"} <= set(uf.columns)
    cf = delta.read(s.table_uri("gold", "class_features_daily"))
    assert {"item_attr_genre", "item_attr_duration_s"} <= set(cf.columns)
    checks = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
              for e in lake.get_asset_check_evaluations()}
    assert "bronze/mapped_interactions:unique_key" in checks and "gold/training_examples:positive_ratio" in checks
    # row rules (keys, not null, ranges) are dbt tests on the marts, run inside dbt build
    assert any(k.startswith("marts/mapped_training_examples:not_null") for k in checks), sorted(checks)
    failed = [k for k, v in checks.items() if not v and not k.endswith(("row_volume_vs_previous", "positive_ratio"))]
    assert not failed, failed

    # train, evaluate without an oracle (popularity + ablation on a temporal split), promote
    train = run(s, instance, "train_model_job", run_config=train_run_config(TINY_MODEL))
    assert train.success, failures(train)
    meta = {m.asset_key.to_user_string(): {k: v.value for k, v in m.materialization.metadata.items()}
            for m in train.get_asset_materialization_events()}
    ev = meta["model_evaluation"]
    assert ev["has_oracle"] is False and "no oracle" in ev["report"].lower()
    assert "temporal" in ev["report"].lower()
    # the same 80 lists: the model beats popularity (seen 0.067-0.068 vs 0.036). Not asserted:
    # model vs the context-free ablation, a tie on this tiny log (seen 0.070-0.075)
    maps = {k: ev[k] for k in ("map@10", "map@10 popularity", "map@10 ablation")}
    assert ev["lists"] == 80
    assert ev["map@10"] > ev["map@10 popularity"] > 0.0, maps
    assert 0.0 < ev["map@10 ablation"] <= 1.0, maps
    assert meta["champion_model"]["promoted"] is True

    # the last day through the daily chain: import, features, checks, inference, cache
    # scored in this process: the fitness serving test covers the Ray actors
    daily = run(s, instance, "daily_recommendations_job", {"dagster/partition": LAST},
                {"ops": {"serving__recommendations": {"config": {"use_ray": False}}}})
    assert daily.success, failures(daily)
    serve = START + dt.timedelta(days=DAYS)
    recs = pl.read_delta(recommendations_uri(s))
    assert set(recs["serve_date"]) == {serve} and set(recs["row_id"]) == {"for_you"}
    assert set(recs["platform"]) <= {"phone", "desktop", "speaker"}
    current = CacheStore(cache_dir(s)).current()
    assert current is not None and set(current.platforms) >= set(recs["platform"])
    user, platform = recs.select("user_id", "platform").row(0)
    screen = json.loads(CacheReader(cache_dir(s), refresh_s=0).get(user, platform))
    expected = recs.filter((pl.col("user_id") == user) & (pl.col("platform") == platform)).sort("rank")
    assert [i["class_id"] for i in screen["rows"][0]["items"]] == expected["class_id"].to_list()


def test_bad_source_fails_the_import_and_writes_nothing(byod_settings):
    s = byod_settings
    events = sorted((Path(s.data_dir) / "listening_source" / "events").glob("*.csv"))
    bad = pl.read_csv(events[-1]).with_row_index("i").with_columns(
        pl.when(pl.col("i") == 4).then(None).otherwise(pl.col("listener")).alias("listener")).drop("i")
    bad.write_csv(events[-1])
    instance = dg.DagsterInstance.ephemeral()
    result = run(s, instance, "daily_lakehouse_job", {"dagster/partition": START.isoformat()})
    assert not result.success
    text = failures(result)
    assert events[-1].name in text and "listener" in text and "row 5" in text
    assert not delta.table_exists(s.table_uri("bronze", "mapped_interactions"))
