"""End to end on tiny data: simulate, then materialize the full asset graph through a real
Dagster run (the definitions users load), on a local folder and on S3 (loopback endpoint)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse.contract import ENTITIES
from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings
from tests.pipeline_runs import DAY1, E2E_DAYS, TINY_EVAL, TINY_MODEL, run_train_job, simulate

pytestmark = pytest.mark.slow

START, DAYS = DAY1, E2E_DAYS  # the landing of conftest's `tiny_built`
GOLD = ("user_features_daily", "class_features_daily", "training_examples", "scoring_candidates")
RANGE_TAGS = {
    "dagster/asset_partition_range_start": START.isoformat(),
    "dagster/asset_partition_range_end": (START + dt.timedelta(days=DAYS - 1)).isoformat(),
}


def run_daily_job(settings: LakehouseSettings, tags: dict) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import build_definitions

    defs = build_definitions(settings)
    job = defs.resolve_job_def("daily_lakehouse_job")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), tags=tags, raise_on_error=False)


def check_results(result) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
            for e in result.get_asset_check_evaluations()}


def test_full_graph_materializes_on_tiny_data(tiny_built, built_copy):
    data, result = tiny_built
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert Path(data) != Path(built_copy.data_dir)
    s = built_copy

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


def test_failed_blocking_check_stops_downstream_and_keeps_gold(built_copy):
    """Bronze corrupted behind the gate's back (a workout of a user nobody exported, as a buggy
    writer would leave): dbt builds the marts from it, the audit before the gold publish fails,
    nothing downstream runs and every gold table keeps its version (write-audit-publish)."""
    import deltalake

    from orchestration.definitions import build_definitions

    s = built_copy
    versions = {g: delta.table_version(s.table_uri("gold", g)) for g in GOLD}
    last = START + dt.timedelta(days=DAYS - 1)
    w = delta.read(s.table_uri("bronze", "workouts"))
    ghost = w.filter(pl.col("landing_date") == last).head(1).with_columns(
        workout_id=pl.lit("w-ghost"), user_id=pl.lit("u-ghost"))
    deltalake.write_deltalake(s.table_uri("bronze", "workouts"), ghost.to_arrow(), mode="append")

    defs = build_definitions(s)
    # everything downstream of bronze, but not the ingest (it would repair it)
    downstream = dg.AssetSelection.groups("staging", "intermediate", "marts", "gold")
    job = dg.define_asset_job("gate_test", selection=downstream,
                              partitions_def=defs.resolve_job_def("daily_lakehouse_job").partitions_def)
    gated = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=defs.resources, jobs=[job])
    instance = dg.DagsterInstance.ephemeral()
    result = gated.resolve_job_def("gate_test").execute_in_process(
        instance=instance, partition_key=last.isoformat(), raise_on_error=False)
    assert not result.success
    checks = check_results(result)
    failed = sorted(k for k, v in checks.items() if v is False)
    assert failed, checks
    # dbt's relationships tests catch the unknown user: the dbt step fails, gold is not published
    assert any(k.startswith("marts/training_examples:relationships") for k in failed), failed
    published = [m.asset_key for m in result.get_asset_materialization_events() if m.asset_key.path[0] == "gold"]
    assert not published, "a gold table was published past a failed blocking check"
    assert {g: delta.table_version(s.table_uri("gold", g)) for g in GOLD} == versions

    # the failure sensor reports it to a person, naming the check, and retries nothing
    from orchestration.remediation import build_remediation_sensor, remediation_log

    sensor = build_remediation_sensor([gated.resolve_job_def("gate_test")])
    out = sensor(dg.build_sensor_context(instance=instance, repository_def=gated.get_repository_def(),
                                         resources={"lakehouse": defs.resources["lakehouse"]}))
    assert not out.run_requests
    decision = remediation_log(s).decisions().row(0, named=True)
    assert (decision["category"], decision["outcome"]) == ("data_quality", "needs_a_person")

    # behind the back again: most of the day's workouts vanish from bronze. dbt's tests pass, the
    # audit before the publish does not (no_shrink): gold keeps its version until a run says
    # allow_shrink
    kept = w.filter(pl.col("landing_date") == last).head(3)
    deltalake.write_deltalake(s.table_uri("bronze", "workouts"), kept.to_arrow(), mode="overwrite",
                              predicate=f"landing_date = '{last}'")
    shrunk = gated.resolve_job_def("gate_test").execute_in_process(
        instance=instance, partition_key=last.isoformat(), raise_on_error=False)
    assert not shrunk.success
    failed = sorted(k for k, v in check_results(shrunk).items() if v is False)
    assert "gold/training_examples:no_shrink" in failed and all(k.startswith("gold/") for k in failed), failed
    assert {g: delta.table_version(s.table_uri("gold", g)) for g in GOLD} == versions
    allowed = gated.resolve_job_def("gate_test").execute_in_process(
        instance=instance, partition_key=last.isoformat(), raise_on_error=False,
        run_config={"ops": {"publish_gold": {"config": {"allow_shrink": True}}}})
    assert allowed.success
    assert delta.read(s.table_uri("gold", "training_examples"),
                      where=(pl.col("event_date") == last) & (pl.col("label_take") == 1)).height == 3


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
    simulate(s.landing_uri, days=3, seed=7)
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


def test_model_assets_train_evaluate_and_promote(built_copy, monkeypatch):
    """The `ml` group through a real Dagster run: Ray Train, MLflow run + registry, evaluation
    against popularity / ablation / oracle, promotion; a worse model is never promoted; a failed
    blocking check upstream keeps training from starting."""
    from ml import tracking
    from ml.promotion import decide  # noqa: F401  (the gate itself is unit-tested)

    s = built_copy
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    instance = dg.DagsterInstance.ephemeral()

    first = run_train_job(s, instance, TINY_MODEL, evaluation={**TINY_EVAL, "peers": True})
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    meta = {m.asset_key.to_user_string(): {k: v.value for k, v in m.materialization.metadata.items()}
            for m in first.get_asset_materialization_events()}
    keys = ("dlrm_model", "ablation_model", "fm_model", "model_evaluation", "champion_model",
            "retrieval_model")
    assert set(meta) == set(keys)
    model, abl, fm, ev, champ, retrieval = (meta[k] for k in keys)
    assert model["version"] == 1 and model["ray_workers"] == 1
    assert 0.0 < model["input_wait_share"] < 1.0  # the epochs read gold (waited) and stepped
    assert "/#/experiments/" in model["mlflow_run"]
    assert ev["has_oracle"] is True and "| candidate |" in ev["report"] and "data:image/png" in ev["report"]
    # the same 190 lists: the simulator's true preferences bound the model, and the model beats
    # both baselines (seen: model 0.290 (training is deterministic), popularity 0.244,
    # context-free ablation 0.234, oracle 0.426, EASE 0.159; earlier, scores in reverse order
    # gave the model 0.011)
    maps = {k: ev[k] for k in ("map@10 oracle", "map@10", "map@10 popularity", "map@10 ablation")}
    assert ev["lists"] == 190
    assert ev["map@10 oracle"] >= ev["map@10"] > ev["map@10 popularity"] > 0.0, maps
    assert ev["map@10"] > ev["map@10 ablation"], maps
    assert champ["promoted"] is True and champ["champion_version"] == 1
    # every ratio with its paired bootstrap interval over the evaluated users; the peers too
    pop = ev["gate"]["vs popularity"]  # exact, for the promotion gate; the figures are rounded
    assert pop["low"] <= pop["ratio"] <= pop["high"] and ev["vs popularity"] == pytest.approx(pop["ratio"], rel=1e-3)
    assert "champion" not in {k.split(" ")[-1] for k in ev if k.startswith("map@10")}  # none yet: no blank entry
    assert {"plot: MAP@K on the held-out days", "plot: calibration of the take head"} <= set(ev)
    assert f"| {ev['vs popularity, 95% CI']} |" in ev["report"] and ev["users"] > 0
    assert {"map@10 ease", "map@10 item_knn", "map@10 als"} <= set(ev), sorted(ev)

    # MLflow: lineage params, per-epoch metrics, evaluation metrics, registered and aliased
    uri = tracking.default_tracking_uri(s.data_dir)
    client = tracking.client(uri)
    run = client.get_run(model["mlflow_run_id"])
    assert int(run.data.params["data.training_examples.delta_version"]) >= 0
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
    assert "eval.candidate.map_at_10" in run.data.metrics
    # the headline at the top level of the run; the experiment opens on the training runs
    assert run.data.metrics["map_at_10"] == ev["gate"]["map@10"]  # exact in MLflow
    assert run.data.tags["mlflow.source.name"].startswith("dagster asset dlrm_model (run ")
    assert run.data.metrics["map_at_10"] == pytest.approx(ev["map@10"], rel=1e-3)
    head = run.data.metrics
    assert head["map_at_10_vs_popularity_low"] <= head["map_at_10_vs_popularity"] <= head["map_at_10_vs_popularity_high"]
    assert head["eval_lists"] == ev["lists"] and {"auc_take", "auc_complete", "auc_music_like"} <= set(head)
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    # a description a person reads, and the Delta inputs as MLflow datasets at their versions
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("a DLRM (dot interaction") and "take, complete, music_like" in note
    assert "with the context features" in note and "trained on the event days" in note
    import mlflow

    mlflow.set_tracking_uri(uri)
    names = mlflow.models.get_model_info(model["model_uri"]).signature.inputs.input_names()
    assert {"user_id", "hour_of_day", "instructor_id"} <= set(names) and "label_take" not in names
    inputs = {i.dataset.name for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert {"training_examples", "user_features_daily", "class_features_daily"} <= inputs
    # the ablation is a model of its own: its MLflow run (under the model's), not registered,
    # and the one the evaluation scored
    assert abl["ablation_of_run_id"] == model["mlflow_run_id"] == run.info.run_id
    assert ev["ablation_run_id"] == abl["mlflow_run_id"] != run.info.run_id
    abl_run = client.get_run(abl["mlflow_run_id"])
    assert abl_run.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert abl_run.data.params["model.with_context"] == "False" and run.data.params["model.with_context"] == "True"
    assert len(client.get_metric_history(abl_run.info.run_id, "loss")) == 2
    # the factorization machine, a peer in every evaluation: the same job without the MLPs
    assert fm["fm_of_run_id"] == run.info.run_id and ev["fm_run_id"] == fm["mlflow_run_id"]
    fm_run = client.get_run(fm["mlflow_run_id"])
    assert fm_run.data.params["model.top_mlp"] == "[]" and run.data.params["model.top_mlp"] != "[]"
    assert fm_run.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert fm_run.data.tags["mlflow.note.content"].startswith("a factorization machine")
    assert "without the context features" in abl_run.data.tags["mlflow.note.content"]
    assert "| fm |" in ev["report"] and ev["map@10 fm"] > 0.0 and "[" in ev["vs fm, 95% CI"]
    assert [v.run_id for v in client.search_model_versions("name='class_recommender'")] == [run.info.run_id]
    # the two-tower retrieval model: trained on the same window, registered apart, in use
    assert retrieval["ranker_run_id"] == run.info.run_id and retrieval["version"] == 1
    assert 0.5 < retrieval["valid_auc_take"] <= 1.0, retrieval
    tt_run = client.get_run(retrieval["mlflow_run_id"])
    assert tt_run.data.params["model.architecture"] == "two_tower"
    assert tt_run.data.params["data.train_end"] == run.data.params["data.train_end"]
    assert str(tracking.get_alias_version("class_recommender_retrieval", "champion",
                                          client_or_uri=uri).version) == "1"
    assert str(tracking.get_alias_version("class_recommender", "champion", client_or_uri=uri).version) == "1"

    # an almost untrained model does not beat the champion on the same lists
    # (the production gate: its first-model rule does not apply with a champion in place)
    weak = {**TINY_MODEL, "epochs": 1, "lr": 1e-7, "sparse_lr": 1e-7, "seed": 3}
    second = run_train_job(s, instance, weak, gate=None, evaluation={"eval_user_fraction": 1.0, "peers": False},
                           without=("retrieval_model",))
    assert second.success, [e.message for e in second.all_events if e.is_failure]
    champ2 = {k: v.value for k, v in second.asset_materializations_for_node("champion_model")[0].metadata.items()}
    assert champ2["promoted"] is False and champ2["champion_version"] == 1
    assert "does not beat" in champ2["reason"] and "ratio" in champ2["reason"]
    ev2 = {k: v.value for k, v in second.asset_materializations_for_node("model_evaluation")[0].metadata.items()}
    vs = ev2["gate"]["vs champion"]  # exact; the figure beside it rounded
    assert vs["low"] <= vs["ratio"] <= vs["high"] and ev2["vs champion"] == pytest.approx(vs["ratio"], rel=1e-3)
    assert ev2["champion"].startswith("v1") and ev2["map@10 champion"] > 0
    assert ev2["vs champion, 95% CI"] in champ2["reason"]
    assert str(tracking.get_alias_version("class_recommender", "challenger", client_or_uri=uri).version) == "2"

    # a failed blocking check on a gold input: training does not start and names the check
    from assets.model import blocking_checks_on_inputs
    from orchestration.definitions import build_definitions

    defs = build_definitions(s)
    ck = blocking_checks_on_inputs([*defs.assets, *defs.asset_checks])[0]
    assert ck.asset_key.path[0] == "gold"
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=ck.asset_key, check_name=ck.name, passed=False, metadata={}))
    blocked = run_train_job(s, instance, TINY_MODEL)
    assert not blocked.success
    failure = next(e for e in blocked.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"{ck.asset_key.to_user_string()}:{ck.name}" in str(failure.event_specific_data.error)
    assert str(tracking.get_alias_version("class_recommender", "champion", client_or_uri=uri).version) == "1"
