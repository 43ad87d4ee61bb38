"""Failures provoked on purpose, each a real error from the real library, in real Dagster runs;
the remediation sensor diagnoses each one, retries what can heal and reports the rest.

| provoked failure                                   | expected category | expected action          |
|----------------------------------------------------|-------------------|--------------------------|
| numpy allocation over a memory limit (RLIMIT_AS)    | out_of_memory     | retry, smaller batch     |
| Delta write to an S3 endpoint that is down          | transient         | retry with backoff       |
| a Ray actor process dies mid-task                   | lost_ray_worker   | resume from checkpoint   |
| a blocking asset check fails                        | data_quality      | report, no retry         |
| a truncated landing file through the real ingest    | data_quality      | report, no retry         |
| code selects a column that does not exist           | config_or_code    | report, no retry         |
| an unexplained error, once                          | unknown           | one retry                |
"""


import datetime as dt
import os
import resource
import shutil
import socket
import tempfile

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from assets.model import ModelTrainingConfig
from assets.resources import LakehouseResource
from assets.serving import InferenceConfig
from lakehouse.io.settings import LakehouseSettings
from operations.policy import RemediationPolicy
from orchestration.remediation import TAG_ROOT, build_remediation_sensor, remediation_log
from tests.orchestration.remediation_harness import Harness

pytestmark = pytest.mark.slow

DAY = "2026-09-03"
parts = dg.DailyPartitionsDefinition(start_date="2026-09-01")
WORLD: dict = {}  # what the environment is like right now; the test heals it between runs


@dg.asset(key=["serving", "recommendations"], partitions_def=parts)
def scoring_oom(config: InferenceConfig) -> None:
    # Memory grows with the batch: 3 MiB per user, under a limit of 1.25 GiB above what the
    # process holds now (a container's memory limit, enforced by the kernel)
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + int(1.25 * 2**30), hard))
    try:
        block = np.empty(config.users_per_batch * 3 * 2**20, dtype=np.uint8)
        block[:: 2**16] = 1
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dg.asset(key=["bronze", "events"], partitions_def=parts)
def s3_write(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> None:
    from lakehouse.io import delta

    s = lakehouse.settings()
    delta.replace_partitions(s.table_uri("bronze", "events"),
                             pa.table({"day": [context.partition_key], "n": [1]}),
                             predicate=f"day = '{context.partition_key}'", partition_by=["day"],
                             storage_options=s.storage_options())


@dg.asset(key="dlrm_model")
def ray_training(context: dg.AssetExecutionContext, config: ModelTrainingConfig) -> None:
    import ray

    from ml.ray_training import init_ray

    if config.resume_run_id:
        WORLD["resumed_from"] = config.resume_run_id
        return
    init_ray(num_cpus=1, temp_dir=WORLD["ray_tmp"])

    @ray.remote(max_restarts=0)
    class Worker:
        def train(self) -> None:
            os._exit(1)  # the worker's process dies, as a killed or crashed node would

    ray.get(Worker.remote().train.remote())


ORDERS = pl.DataFrame({"order_id": [1, 1, 2]})  # a duplicated key, as a buggy writer leaves it


@dg.asset(key=["gold", "orders"], partitions_def=parts)
def orders() -> None:
    pass


@dg.asset_check(asset=orders, blocking=True, name="unique_key")
def orders_unique() -> dg.AssetCheckResult:
    dups = ORDERS.filter(pl.col("order_id").is_duplicated())
    return dg.AssetCheckResult(passed=dups.height == 0, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"duplicated_rows": dups.height,
                                         "sample": dg.MetadataValue.json(dups.to_dicts())})


@dg.asset(deps=[orders], partitions_def=parts)
def orders_report() -> None:
    pass


@dg.asset(key=["bronze", "workouts"], partitions_def=parts)
def truncated_landing(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> None:
    from lakehouse.landing.ingest import ingest_days

    ingest_days(lakehouse.settings(), [dt.date.fromisoformat(context.partition_key)])


@dg.asset(partitions_def=parts)
def code_bug() -> None:
    pl.DataFrame({"user_id": [1]}).select("user")


@dg.asset(partitions_def=parts)
def flaky() -> None:
    if not WORLD.get("flaky_done"):
        WORLD["flaky_done"] = True
        raise RuntimeError("the exporter returned an unexpected state")


CASES = {  # job -> (expected category, expected action, should heal)
    "oom_job": ("out_of_memory", "retry_with_smaller_batch_or_fewer_workers", True),
    "s3_job": ("transient_storage_or_network", "retry_with_backoff", True),
    "ray_job": ("lost_ray_worker", "resume_from_last_checkpoint", True),
    "quality_job": ("data_quality", "report_no_retry", False),
    "landing_job": ("data_quality", "report_no_retry", False),
    "code_job": ("config_or_code", "report_no_retry", False),
    "unknown_job": ("unknown", "retry_with_backoff", True),
}
JOBS = [
    dg.define_asset_job("oom_job", selection=[scoring_oom], partitions_def=parts),
    dg.define_asset_job("s3_job", selection=[s3_write], partitions_def=parts),
    dg.define_asset_job("ray_job", selection=[ray_training]),
    dg.define_asset_job("quality_job", selection=[orders, orders_report], partitions_def=parts),
    dg.define_asset_job("landing_job", selection=[truncated_landing], partitions_def=parts),
    dg.define_asset_job("code_job", selection=[code_bug], partitions_def=parts),
    dg.define_asset_job("unknown_job", selection=[flaky], partitions_def=parts),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.fault("remediation: provoked failures")
def test_the_sensor_diagnoses_provoked_failures_and_heals_what_it_can(tmp_path, monkeypatch, fault_drill):
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.landing_factory import workout, write_day, write_parquet

    # S3 for the transient case: the endpoint is down until the test brings it up
    port = _free_port()
    for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    s3_settings = LakehouseSettings.build(uri="s3://healing/lake", data_dir=str(tmp_path))
    local = LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))
    # a landing day whose workouts file is cut in half, as an interrupted upload leaves it
    landing = tmp_path / "lake" / "landing"
    day = dt.date.fromisoformat(DAY)
    write_day(landing, day, with_catalogue=True, workouts=[workout("w1", "u1", "c1", day)])
    f = write_parquet(landing, "workouts", day, [workout("w2", "u1", "c1", day)] * 50, name="part-0001.parquet")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    WORLD.clear()
    WORLD["ray_tmp"] = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths are limited
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)

    def heal_environment(request: dg.RunRequest) -> None:
        if request.job_name == "s3_job" and not WORLD.get("s3_up"):
            server.start()
            boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="healing")
            WORLD["s3_up"] = True

    defs = dg.Definitions(
        assets=[scoring_oom, s3_write, ray_training, orders, orders_report, truncated_landing,
                code_bug, flaky],
        asset_checks=[orders_unique], jobs=JOBS,
        resources={"lakehouse": LakehouseResource(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))})
    sensor = build_remediation_sensor(JOBS, policy=RemediationPolicy(backoff_s=0.0))
    resources = {"lakehouse": LakehouseResource(uri=local.uri, data_dir=str(tmp_path))}
    try:
        with dg.instance_for_test() as instance:
            h = Harness(defs, instance, sensor, resources)
            failed = {}
            for job in CASES:
                # the S3 job alone talks to S3: its resource points there
                if job == "s3_job":
                    h.defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=JOBS,
                                            resources={"lakehouse": LakehouseResource(uri=s3_settings.uri,
                                                                                      data_dir=str(tmp_path))})
                kwargs = {} if job == "ray_job" else {"partition_key": DAY}
                result = h.run(job, **kwargs)
                assert not result.success, f"{job} was meant to fail"
                failed[job] = result.run_id
                h.defs = defs
            fault_drill.injected()
            # the S3 retry must run against S3: route it while it is launched
            launched = _settle_routed(h, defs, s3_settings, tmp_path, heal_environment)
            fault_drill.recovered()

            decisions = remediation_log(local).decisions()
            by_run = {r["failed_run_id"]: r for r in decisions.iter_rows(named=True)}
            right, table = 0, []
            for job, (category, action, heals) in CASES.items():
                d = by_run[failed[job]]
                ok = (d["category"], d["action"]) == (category, action) and (
                    d["outcome"] == "healed" if heals else d["outcome"] == "needs_a_person")
                right += ok
                table.append({"job": job, "category": d["category"], "action": d["action"],
                              "outcome": d["outcome"], "right": ok,
                              **({} if ok else {"rule": d["rule"], "matched": d["matched"],
                                                "evidence": d["evidence"][:600]})})
            fault_drill.detail.update({"decisions_right": right, "decisions": len(CASES),
                                       "runs_launched": launched, "table": table})
            assert right == len(CASES), "\n".join(map(str, table))

            # what each retry carried
            oom = by_run[failed["oom_job"]]
            assert '"users_per_batch": 256' in oom["config_patch"]
            assert WORLD["resumed_from"] == failed["ray_job"]  # resumed the failed run's checkpoints
            quality = by_run[failed["quality_job"]]
            assert "unique_key" in quality["evidence"] and '"order_id": 1' in quality["failed_checks"]
            assert "part-0001.parquet" in by_run[failed["landing_job"]]["evidence"]
            assert all(r.dagster_run.tags.get(TAG_ROOT) for r in h.launched)
            # the UI shows it: the log asset was materialized with the decisions table
            mat = instance.get_latest_materialization_event(dg.AssetKey(["ops", "remediation_log"]))
            assert mat is not None and "latest_decisions" in mat.asset_materialization.metadata
    finally:
        if WORLD.get("s3_up"):
            server.stop()
        import ray

        ray.shutdown()
        shutil.rmtree(WORLD.get("ray_tmp", ""), ignore_errors=True)


def _settle_routed(h: Harness, defs, s3_settings, tmp_path, heal) -> int:
    """Like Harness.settle, with the S3 job's retry launched against the S3 lakehouse."""
    s3_defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=JOBS,
                             resources={"lakehouse": LakehouseResource(uri=s3_settings.uri,
                                                                       data_dir=str(tmp_path))})
    n = 0
    for _ in range(12):
        requests = h.tick()
        if not requests:
            return n
        for req in requests:
            heal(req)
            h.defs = s3_defs if req.job_name == "s3_job" else defs
            h.launch(req)
            h.defs = defs
            n += 1
    raise AssertionError("the sensor kept requesting runs")
