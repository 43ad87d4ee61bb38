"""End to end on tiny data: simulate, then materialize the full asset graph through a real
Dagster run (the definitions users load), on a local folder and on S3 (loopback endpoint)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid

import dagster as dg
import polars as pl
import pytest

from lakehouse import delta
from lakehouse.contract import ENTITIES
from lakehouse.settings import LakehouseSettings

pytestmark = pytest.mark.slow

START = dt.date(2026, 9, 1)
DAYS = 6
GOLD = ("user_features_daily", "class_features_daily", "training_examples", "scoring_candidates")
RANGE_TAGS = {
    "dagster/asset_partition_range_start": START.isoformat(),
    "dagster/asset_partition_range_end": (START + dt.timedelta(days=DAYS - 1)).isoformat(),
}


def simulate(landing: str, days: int = DAYS, seed: int = 7) -> None:
    subprocess.run([sys.executable, "-m", "simulator", "generate", "--size", "tiny", "--seed", str(seed),
                    "--days", str(days), "--start-date", START.isoformat(), "--landing", landing],
                   check=True, capture_output=True)


def run_daily_job(settings: LakehouseSettings, tags: dict) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import build_definitions

    defs = build_definitions(settings)
    job = defs.resolve_job_def("daily_lakehouse_job")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), tags=tags, raise_on_error=False)


def check_results(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
            for e in result.get_asset_check_evaluations()}


@pytest.fixture
def local_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LAKEHOUSE_URI", raising=False)
    monkeypatch.delenv("LANDING_URI", raising=False)
    monkeypatch.delenv("LAKEHOUSE_DUCKDB_PATH", raising=False)
    return LakehouseSettings.from_env()


def test_full_graph_materializes_on_tiny_data(local_settings):
    s = local_settings
    simulate(s.landing_uri)
    result = run_daily_job(s, RANGE_TAGS)
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    # every bronze entity and every gold mart is a Delta table with rows for the range
    for e in ENTITIES:
        assert delta.row_count(s.table_uri("bronze", e.name)) > 0, e.name
    for g in GOLD:
        df = delta.read(s.table_uri("gold", g))
        assert df.height > 0, g
    # gold marts cover the run's dates
    feats = delta.read(s.table_uri("gold", "user_features_daily"))
    assert feats["feature_date"].max() == START + dt.timedelta(days=DAYS - 1)
    # training examples: positives are the bronze workouts, negatives at the configured ratio
    te = delta.read(s.table_uri("gold", "training_examples"))
    n_workouts = delta.row_count(s.table_uri("bronze", "workouts"))
    assert te.filter(pl.col("label_take") == 1).height == n_workouts
    assert te.filter(pl.col("label_take") == 0).height == 4 * n_workouts

    checks = check_results(result)
    gx = {k: v for k, v in checks.items() if k.startswith(("bronze/", "gold/"))}
    assert any(k.startswith("gold/training_examples:positive_ratio") for k in gx)
    assert len(checks) > 20
    failed = [k for k, v in checks.items() if not v and not k.endswith("row_volume_vs_previous")]
    assert not failed, failed

    # materializations carry what a user looks for in the UI
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    gold_meta = mats["gold/training_examples"].materialization.metadata
    assert gold_meta["delta_version"].value >= 0 and gold_meta["delta_uri"].value.endswith("gold/training_examples")

    # re-running the last day through Dagster is idempotent: same rows, new Delta versions
    before = {g: delta.read(s.table_uri("gold", g)).height for g in GOLD}
    last = (START + dt.timedelta(days=DAYS - 1)).isoformat()
    again = run_daily_job(s, {"dagster/partition": last})
    assert again.success
    assert {g: delta.read(s.table_uri("gold", g)).height for g in GOLD} == before
    assert delta.row_count(s.table_uri("bronze", "workouts")) == n_workouts


def test_failed_blocking_check_stops_downstream_and_keeps_gold(local_settings):
    """Bronze corrupted behind the gate's back (a duplicated row, as a buggy writer would leave):
    the blocking unique_key check fails, no dbt model runs, and gold keeps its version."""
    import deltalake

    from orchestration.definitions import build_definitions

    s = local_settings
    simulate(s.landing_uri)
    assert run_daily_job(s, RANGE_TAGS).success
    versions = {g: delta.table_version(s.table_uri("gold", g)) for g in GOLD}
    last = START + dt.timedelta(days=DAYS - 1)
    w = delta.read(s.table_uri("bronze", "workouts"))
    dup = w.filter(pl.col("landing_date") == last).head(1)
    deltalake.write_deltalake(s.table_uri("bronze", "workouts"), dup.to_arrow(), mode="append")

    defs = build_definitions(s)
    bronze_workouts = dg.AssetKey(["bronze", "workouts"])
    # everything downstream of bronze, plus bronze's checks, but not the ingest (it would repair it)
    downstream = dg.AssetSelection.groups("staging", "intermediate", "gold", "dbt")
    job = dg.define_asset_job("gate_test", selection=downstream | dg.AssetSelection.checks_for_assets(bronze_workouts),
                              partitions_def=defs.resolve_job_def("daily_lakehouse_job").partitions_def)
    gated = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=defs.resources, jobs=[job])
    instance = dg.DagsterInstance.ephemeral()
    result = gated.resolve_job_def("gate_test").execute_in_process(
        instance=instance, partition_key=last.isoformat(), raise_on_error=False)
    assert not result.success
    checks = check_results(result)
    assert checks["bronze/workouts:unique_key"] is False
    assert not result.get_asset_materialization_events(), "a model ran past a failed blocking check"
    assert {g: delta.table_version(s.table_uri("gold", g)) for g in GOLD} == versions

    # the failure sensor reports it to a person, naming the check, and retries nothing
    from orchestration.remediation import build_remediation_sensor, remediation_log

    sensor = build_remediation_sensor([gated.resolve_job_def("gate_test")])
    out = sensor(dg.build_sensor_context(instance=instance, repository_def=gated.get_repository_def(),
                                         resources={"lakehouse": defs.resources["lakehouse"]}))
    assert not out.run_requests
    decision = remediation_log(s).decisions().row(0, named=True)
    assert (decision["category"], decision["outcome"]) == ("data_quality", "needs_a_person")
    assert "bronze/workouts:unique_key" in decision["matched"]
    assert dup["workout_id"].item() in decision["failed_checks"]  # the offending row is reported


@pytest.mark.usefixtures("s3_env")
def test_full_graph_on_s3(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_URI", s3_env)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LANDING_URI", raising=False)
    monkeypatch.delenv("LAKEHOUSE_DUCKDB_PATH", raising=False)
    # a distinctive key (moto accepts any): it must not show up in what the run recorded
    secret = "Sx9" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    s = LakehouseSettings.from_env()
    assert s.is_s3 and s.landing_uri.startswith("s3://")
    simulate(s.landing_uri, days=3)
    tags = {**RANGE_TAGS, "dagster/asset_partition_range_end": (START + dt.timedelta(days=2)).isoformat()}
    result = run_daily_job(s, tags)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    recorded = repr(result.all_events) + repr(result.dagster_run)
    assert secret not in recorded, "the S3 secret key leaked into the run's events or config"
    opts = s.storage_options()
    for g in GOLD:
        assert delta.row_count(s.table_uri("gold", g), storage_options=opts) > 0, g
    assert delta.row_count(s.table_uri("bronze", "workouts"), storage_options=opts) > 0
    # nothing of the lakehouse went to the local folder but dbt's working file
    assert not (tmp_path / "lakehouse").exists()


def run_train_job(settings: LakehouseSettings, instance: dg.DagsterInstance, model_config: dict):
    from orchestration.definitions import build_definitions

    job = build_definitions(settings).resolve_job_def("train_model_job")
    return job.execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"dlrm_model": {"config": model_config},
                            "model_evaluation": {"config": {"eval_user_fraction": 1.0}}}})


TINY_MODEL = {"train_days": 4, "valid_days": 1, "epochs": 2, "batch_size": 256,
              "embedding_dim": 8, "bottom_mlp": [16, 8], "top_mlp": [32], "lr": 0.005}


def test_model_assets_train_evaluate_and_promote(local_settings, monkeypatch):
    """The `ml` group through a real Dagster run: Ray Train, MLflow run + registry, evaluation
    against popularity / ablation / oracle, promotion; a worse model is never promoted; a failed
    blocking check upstream keeps training from starting."""
    from ml import tracking
    from ml.promotion import decide  # noqa: F401  (the gate itself is unit-tested)

    s = local_settings
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    simulate(s.landing_uri)
    assert run_daily_job(s, RANGE_TAGS).success
    instance = dg.DagsterInstance.ephemeral()

    first = run_train_job(s, instance, TINY_MODEL)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    meta = {m.asset_key.to_user_string(): {k: v.value for k, v in m.materialization.metadata.items()}
            for m in first.get_asset_materialization_events()}
    model, ev, champ = meta["dlrm_model"], meta["model_evaluation"], meta["champion_model"]
    assert model["version"] == 1 and model["ray_workers"] == 1
    assert "/#/experiments/" in model["mlflow_run"]
    assert ev["has_oracle"] is True and "| candidate |" in ev["report"] and "data:image/png" in ev["report"]
    for k in ("map@10", "map@10 popularity", "map@10 ablation", "map@10 oracle"):
        assert 0.0 <= ev[k] <= 1.0, k
    assert champ["promoted"] is True and champ["champion_version"] == 1

    # MLflow: lineage params, per-epoch metrics, evaluation metrics, registered and aliased
    uri = tracking.default_tracking_uri(s.data_dir)
    client = tracking.client(uri)
    run = client.get_run(model["mlflow_run_id"])
    assert int(run.data.params["data.training_examples.delta_version"]) >= 0
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
    assert "eval.candidate.map_at_10" in run.data.metrics
    assert str(tracking.get_alias_version("class_recommender", "champion", client_or_uri=uri).version) == "1"

    # an almost untrained model does not beat the champion on the same lists
    weak = {**TINY_MODEL, "epochs": 1, "lr": 1e-7, "sparse_lr": 1e-7, "seed": 3}
    second = run_train_job(s, instance, weak)
    assert second.success, [e.message for e in second.all_events if e.is_failure]
    champ2 = {k: v.value for k, v in second.asset_materializations_for_node("champion_model")[0].metadata.items()}
    assert champ2["promoted"] is False and champ2["champion_version"] == 1
    assert "does not beat" in champ2["reason"]
    assert str(tracking.get_alias_version("class_recommender", "challenger", client_or_uri=uri).version) == "2"

    # a failed blocking check on a gold input: training does not start and names the check
    from assets.model import blocking_checks_on_inputs
    from orchestration.definitions import build_definitions

    ck = blocking_checks_on_inputs(build_definitions(s).asset_checks)[0]
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=ck.asset_key, check_name=ck.name, passed=False, metadata={}))
    blocked = run_train_job(s, instance, TINY_MODEL)
    assert not blocked.success
    failure = next(e for e in blocked.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"{ck.asset_key.to_user_string()}:{ck.name}" in str(failure.event_specific_data.error)
    assert str(tracking.get_alias_version("class_recommender", "champion", client_or_uri=uri).version) == "1"
