"""The failure classifier, the retry policy, redaction and the remediation log; the sensor's
bounded retries and its idempotent log on real (failing) Dagster runs."""

import datetime as dt
import json

import dagster as dg
import pytest

from assets.resources import LakehouseResource
from lakehouse.io.settings import LakehouseSettings
from operations.diagnosis import Category, FailedCheck, FailureEvidence, RuleClassifier, StepError
from operations.policy import Action, RemediationPolicy, merge_run_config
from operations.redaction import redact
from operations.remediation_log import RemediationLog, decision_row, outcome_row
from orchestration.remediation import build_remediation_sensor, remediation_log
from tests.orchestration.remediation_harness import Harness


def ev(*errors: tuple[str, str], checks=(), attempt=0) -> FailureEvidence:
    return FailureEvidence(
        run_id="r1", job_name="daily_recommendations_job", partition="2026-09-03",
        errors=tuple(StepError("step", tuple(c.split(">")), m) for c, m in errors),
        failed_checks=tuple(checks), attempt=attempt)


# Messages as the libraries word them (seen in this project's runs and fault tests)
CASES = [
    (("OSError", "Kernel error -> Generic S3 error: Error performing GET http://127.0.0.1:9/b/t/"
      "_delta_log/_last_checkpoint in 1.7s, after 10 retries - HTTP error: error sending request: "
      "client error (Connect): tcp connect error: Connection refused (os error 111)"),
     Category.TRANSIENT),
    (("DagsterExecutionStepExecutionError>ActorDiedError",
      "The actor died unexpectedly before finishing this task. Worker exit type: SYSTEM_ERROR. "
      "Some common causes include: (1) the process was killed by the OOM killer"), Category.LOST_WORKER),
    (("DagsterExecutionStepExecutionError>RayTrainingError",
      "Ray training run 'dlrm-2026-10-29-1a2b3c4d' failed: rank 0: ActorDiedError: The actor died "
      "unexpectedly before finishing this task."), Category.LOST_WORKER),
    (("DagsterExecutionStepExecutionError>_ArrayMemoryError",
      "Unable to allocate 1.50 GiB for an array with shape (1610612736,) and data type uint8"),
     Category.OUT_OF_MEMORY),
    (("RayTaskError>OutOfMemoryError", "Task was killed due to the node running low on memory."),
     Category.OUT_OF_MEMORY),
    (("OSError", "Generic LocalFileSystem error: Unable to open file /lake/bronze/workouts/part-0.parquet#1: "
      "Read-only file system (os error 30)"), Category.CONFIG_OR_CODE),
    (("OSError", "[Errno 28] No space left on device"), Category.CONFIG_OR_CODE),
    (("StorageNotWritableError", "cannot write /lake/bronze/workouts: the storage is not writable "
      "(permission denied)"), Category.CONFIG_OR_CODE),
    (("OSError", "Generic S3 error: Error performing PUT http://127.0.0.1:9/b/lake/bronze/workouts/"
      "_delta_log/00000000000000000002.json in 1.4ms - HTTP error: error sending request: client "
      "error (SendRequest): connection error: Connection reset by peer (os error 104)"), Category.TRANSIENT),
    (("ConcurrentWriteError", "s3://b/lake/bronze/workouts: commit lost to a conflicting concurrent "
      "write of the same table 7 times; gave up"), Category.TRANSIENT),
    (("DagsterDbtCliRuntimeError", "Runtime Error: IO Error: Could not set lock on file "
      "\"warehouse.duckdb\": Conflicting lock is held"), Category.TRANSIENT),
    (("DagsterDbtCliRuntimeError", "Compilation Error in model int_class_popularity_daily"),
     Category.CONFIG_OR_CODE),
    (("LandingFileError", "landing file workouts/date=2026-09-03/part-0001.parquet cannot be read"),
     Category.DATA_QUALITY),
    (("Failure", "no champion model: the registered model 'class_recommender' has no 'champion' alias"),
     Category.CONFIG_OR_CODE),
    (("ClientError", "An error occurred (InvalidAccessKeyId) when calling the PutObject operation"),
     Category.CONFIG_OR_CODE),
    (("ColumnNotFoundError", "unable to find column \"user\"; valid columns: [\"user_id\"]"),
     Category.CONFIG_OR_CODE),
    (("CommitFailedError", "Transaction failed: a concurrent transaction deleted the same data"),
     Category.TRANSIENT),
    (("RuntimeError", "the exporter returned an unexpected state"), Category.UNKNOWN),
]


@pytest.mark.parametrize("error,category", CASES, ids=[c.value + str(i) for i, (_, c) in enumerate(CASES)])
def test_rules_classify_real_error_texts(error, category):
    assert RuleClassifier().classify(ev(error)).category is category


def test_a_failed_blocking_check_is_data_quality_whatever_the_error():
    check = FailedCheck("bronze/workouts", "unique_key", "duplicated workout_id", {"sample": [{"w": 1}]})
    d = RuleClassifier().classify(ev(("DagsterExecutionStepExecutionError", "connection reset"), checks=[check]))
    assert (d.category, d.matched) == (Category.DATA_QUALITY, "bronze/workouts:unique_key")


def test_policy_shrinks_batches_on_oom_and_stops_at_the_floor():
    policy = RemediationPolicy()
    oom = RuleClassifier().classify(ev(("MemoryError", "")))
    d = policy.decide(oom, ev(("MemoryError", "")),
                      op_config={"serving__recommendations": {"users_per_batch": 512, "num_workers": 2}})
    assert d.retry and d.action is Action.RETRY_SMALLER
    assert d.config_patch == {"serving__recommendations": {"users_per_batch": 256, "num_workers": 1}}
    floor = policy.decide(oom, ev(("MemoryError", "")),
                          op_config={"serving__recommendations": {"users_per_batch": 32, "num_workers": 1}})
    assert not floor.retry and floor.action is Action.GIVE_UP
    assert merge_run_config({"ops": {"x": {"config": {"a": 1}}}}, {"x": {"b": 2}}) == \
        {"ops": {"x": {"config": {"a": 1, "b": 2}}}}


def test_policy_bounds_retries_and_backs_off():
    policy = RemediationPolicy(backoff_s=30, backoff_factor=4, max_backoff_s=600)
    t = RuleClassifier().classify(ev(("ConnectionResetError", "")))
    delays = [policy.decide(t, ev(("ConnectionResetError", ""), attempt=a),
                            prior_by_category={t.category.value: a}).delay_s for a in range(3)]
    assert delays == [30, 120, 480]
    last = policy.decide(t, ev(("ConnectionResetError", ""), attempt=3), prior_by_category={t.category.value: 3})
    assert not last.retry and last.action is Action.GIVE_UP and last.page
    dq = RuleClassifier().classify(ev(("LandingFileError", "")))
    assert policy.decide(dq, ev(("LandingFileError", ""))).action is Action.REPORT


def test_lost_worker_resumes_training_from_the_root_runs_checkpoints():
    e = FailureEvidence(run_id="retry2", job_name="train_model_job", root_run_id="root1",
                        errors=(StepError("dlrm_model", ("ActorDiedError",), "The actor died"),), attempt=1)
    d = RemediationPolicy().decide(RuleClassifier().classify(e), e, op_config={"dlrm_model": {}},
                                   resumable_ops=["dlrm_model"])
    assert d.action is Action.RESUME_FROM_CHECKPOINT
    assert d.config_patch == {"dlrm_model": {"resume_run_id": "root1"}} and d.attempt == 2


def test_redaction_masks_environment_secrets_and_credential_shapes(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY")
    key_id = "AK" + "IAIOSFODNN7EXAMPLE"  # split: the repo's own secret scan must not flag it
    text = (f"failed with key wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY, id {key_id}, "
            "url https://bob:hunter2@example.invalid/x, password=s3cr3t")
    out = redact(text)
    for secret in ("wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY", key_id, "hunter2", "s3cr3t"):
        assert secret not in out
    assert "failed with key ***" in out


def test_log_appends_each_event_once(tmp_path):
    log = RemediationLog(str(tmp_path / "ops" / "remediation_log"))
    e = ev(("ConnectionResetError", "reset by peer"))
    d = RemediationPolicy().decide(RuleClassifier().classify(e), e)
    now = dt.datetime.now(dt.timezone.utc)
    rows = [decision_row(e, d, now)]
    assert log.append(rows) == 1
    assert log.append(rows) == 0  # a tick evaluated twice
    log.append([outcome_row("r1", outcome="healed", at=now, retry_run_id="r2")])
    decisions = log.decisions()
    assert decisions.height == 1
    assert decisions.row(0, named=True)["outcome"] == "healed"
    assert decisions.row(0, named=True)["retry_run_id"] == "r2"


# ---------------------------------------------------------------------------------------------
# The sensor on real failing runs

ATTEMPTS = {"n": 0}


@dg.asset
def always_reset() -> None:
    ATTEMPTS["n"] += 1
    raise ConnectionResetError(104, "Connection reset by peer")


@dg.asset
def secret_in_error() -> None:
    import os

    raise ValueError(f"bad setting: secret_access_key={os.environ['AWS_SECRET_ACCESS_KEY']}")


reset_job = dg.define_asset_job("reset_job", selection=[always_reset])
secret_job = dg.define_asset_job("secret_job", selection=[secret_in_error])


@pytest.fixture
def harness(tmp_path):
    settings = LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))
    defs = dg.Definitions(assets=[always_reset, secret_in_error], jobs=[reset_job, secret_job])
    sensor = build_remediation_sensor([reset_job, secret_job], policy=RemediationPolicy(backoff_s=0.0))
    with dg.instance_for_test() as instance:
        yield Harness(defs, instance, sensor, {"lakehouse": LakehouseResource(uri=settings.uri,
                                                                               data_dir=str(tmp_path))}), settings


def test_retries_are_bounded_then_a_person_is_asked(harness):
    h, settings = harness
    ATTEMPTS["n"] = 0
    assert not h.run("reset_job").success
    assert h.settle() == 3  # three retries of a transient error, then no more
    assert ATTEMPTS["n"] == 4
    decisions = remediation_log(settings).decisions()
    assert decisions["category"].unique().to_list() == ["transient_storage_or_network"]
    assert decisions["outcome"].to_list() == ["failed_again"] * 3 + ["needs_a_person"]
    assert decisions["action"].to_list()[-1] == "give_up_retries_exhausted"
    assert decisions["attempt"].to_list() == [1, 2, 3, 0]
    assert h.tick() == []  # nothing is retried twice


def test_backoff_waits_for_a_later_tick(harness):
    h, settings = harness
    h.sensor = build_remediation_sensor([reset_job, secret_job], policy=RemediationPolicy(backoff_s=3600))
    assert not h.run("reset_job").success
    assert h.tick() == []  # diagnosed and logged, but the retry waits an hour
    state = json.loads(h.cursor)
    assert len(state["pending"]) == 1 and state["pending"][0]["job_name"] == "reset_job"
    assert remediation_log(settings).decisions()["outcome"].to_list() == ["pending"]


def test_a_tick_evaluated_twice_logs_once(harness):
    h, settings = harness
    assert not h.run("secret_job").success
    before = h.cursor
    h.tick()
    h.cursor = before  # the cursor update was lost (crash): the next tick sees the same failure
    h.tick()
    assert remediation_log(settings).read().height == 1


def test_secrets_do_not_reach_the_log_or_the_ui(harness, monkeypatch):
    h, settings = harness
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecretvalue123")
    assert not h.run("secret_job").success
    h.tick()
    events = remediation_log(settings).read()
    assert "topsecretvalue123" not in json.dumps(events.to_dicts(), default=str)
    mat = h.instance.get_latest_materialization_event(dg.AssetKey(["ops", "remediation_log"]))
    assert "topsecretvalue123" not in str(mat.asset_materialization.metadata)
    assert events["category"].to_list() == ["config_or_code"]


def test_the_sensor_is_in_the_definitions():
    from orchestration.definitions import defs

    d = defs()
    sensor = d.resolve_sensor_def("run_failure_remediation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert "daily_recommendations_job" in {j.name for j in sensor.jobs}
    assert d.resolve_assets_def(dg.AssetKey(["serving", "recommendations"]))  # ops group excluded from jobs
