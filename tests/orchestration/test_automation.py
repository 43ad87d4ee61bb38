"""The code location loads, and the landing sensor and schedule ask for the right partitions."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import dagster as dg

from assets.resources import LakehouseResource
from lakehouse.io.settings import LakehouseSettings
from orchestration.sensors import landing_zone_sensor
from tests.landing_factory import DAY0, workout, write_day


def evaluate(settings, cursor=None, grace_hours=6.0, skip: list | None = None):
    ctx = dg.build_sensor_context(cursor=cursor, resources={"lakehouse": LakehouseResource(
        uri=settings.uri, landing_uri=settings.landing_uri, data_dir=settings.data_dir,
        landing_grace_hours=grace_hours)})
    result = landing_zone_sensor(ctx)
    if isinstance(result, dg.SkipReason) and skip is not None:
        skip.append(result.skip_message)
    requests = list(result.run_requests or []) if isinstance(result, dg.SensorResult) else []
    return requests, ctx.cursor


def test_landing_sensor_requests_new_and_changed_days_once(tmp_path):
    s = LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))
    from pathlib import Path

    lz = Path(s.landing_uri)
    day1 = DAY0 + dt.timedelta(days=1)
    write_day(lz, DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    write_day(lz, day1, with_catalogue=False, workouts=[workout("w2", "u1", "c1", day1)])
    requests, cursor = evaluate(s)
    assert sorted(r.partition_key for r in requests) == [DAY0.isoformat(), day1.isoformat()]
    assert all(r.job_name in (None, "daily_recommendations_job") for r in requests)
    # nothing new: nothing requested
    again, cursor = evaluate(s, cursor)
    assert again == []
    # yesterday's export re-sent (a file changed): only that day again
    time.sleep(0.01)
    write_day(lz, day1, with_catalogue=False, workouts=[workout("w2", "u1", "c1", day1), workout("w3", "u2", "c2", day1)])
    changed, cursor = evaluate(s, cursor)
    assert [r.partition_key for r in changed] == [day1.isoformat()]
    assert json.loads(cursor)["seen"][day1.isoformat()]


def test_landing_sensor_waits_for_a_complete_manifest_then_reports_overdue_days(tmp_path):
    from pathlib import Path

    from orchestration.remediation import remediation_log
    from tests.landing_factory import seal

    s = LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))
    lz = Path(s.landing_uri)
    day1, day2 = DAY0 + dt.timedelta(days=1), DAY0 + dt.timedelta(days=2)
    write_day(lz, DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    write_day(lz, day1, with_catalogue=False, workouts=[workout("w2", "u1", "c1", day1)])
    write_day(lz, day2, with_catalogue=False, workouts=[workout("w3", "u1", "c1", day2)])
    (lz / "_manifests" / f"date={day1}.json").unlink()  # day 1 is still landing
    manifest2 = lz / "_manifests" / f"date={day2}.json"
    manifest2.write_text(manifest2.read_text().replace('"rows": 1', '"rows": 7'))  # still well formed
    (lz / "workouts" / f"date={day2}" / "part-0001.parquet").write_bytes(b"x")  # a file it does not list
    skip: list[str] = []
    requests, cursor = evaluate(s, skip=skip)
    assert [r.partition_key for r in requests] == [DAY0.isoformat()]
    # the waiting days are named in the tick, nothing is reported yet
    requests, cursor = evaluate(s, cursor, skip=skip)
    assert requests == [] and f"waiting for 2 day(s): {day1}, {day2}" in skip[-1]
    assert remediation_log(s).read().height == 0
    # past the grace period: reported once to ops/remediation_log, naming what is wrong
    requests, cursor = evaluate(s, cursor, grace_hours=0.0)
    requests, cursor = evaluate(s, cursor, grace_hours=0.0)
    rows = remediation_log(s).decisions()
    assert rows.height == 2 and set(rows["outcome"]) == {"needs_a_person"}
    text = " ".join(rows["evidence"].to_list())
    assert f"no manifest yet" in text and "part-0001.parquet: not listed in the manifest" in text
    # the exporter finishes day 1: offered now
    seal(lz, day1)
    requests, _ = evaluate(s, cursor, grace_hours=0.0)
    assert [r.partition_key for r in requests] == [day1.isoformat()]


def test_definitions_load_with_schedule_sensor_checks_and_dbt_lineage(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LAKEHOUSE_URI", raising=False)
    from orchestration.definitions import build_definitions

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for expected in ("landing/workouts", "bronze/workouts", "bronze/quarantine", "staging/stg_app__workouts",
                     "gold/user_features_daily", "gold/training_examples"):
        assert expected in keys, expected
    # dbt lineage: the staging model reads the bronze table
    parents = {p.to_user_string() for p in graph.get(dg.AssetKey(["staging", "stg_app__workouts"])).parent_keys}
    assert "bronze/workouts" in parents
    checks = {f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys}
    assert "gold/training_examples:positive_ratio" in checks and "bronze/workouts:unique_key" in checks
    assert any(name.startswith("marts/user_features_daily:") and "unique" in name
               for name in checks), "dbt tests should appear as asset checks on the marts"
    # write-audit-publish: the gold table is its own asset, downstream of the mart dbt builds
    assert {p.to_user_string() for p in graph.get(dg.AssetKey(["gold", "user_features_daily"])).parent_keys} \
        == {"marts/user_features_daily"}
    assert "gold/training_examples:no_shrink" in checks and "bronze/workouts:quarantine_share" in checks
    schedule = defs.resolve_schedule_def("daily_recommendations_schedule")
    assert schedule.cron_schedule.startswith("0 3")
    ctx = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 9, 5, 3, tzinfo=dt.timezone.utc))
    req = next(iter(schedule.evaluate_tick(ctx).run_requests))
    assert req.partition_key == "2026-09-04"  # yesterday's partition
    assert defs.resolve_sensor_def("landing_zone_sensor")
    assert os.environ.get("LAKEHOUSE_URI") is None


def test_an_edited_dbt_file_makes_the_manifest_stale(tmp_path):
    import shutil
    from pathlib import Path

    from assets.dbt import lakehouse_dbt_project, manifest_is_stale, prepare_manifest
    from lakehouse.io.settings import LakehouseSettings
    from ml.datasets import FITNESS

    root = Path(__file__).resolve().parents[2]
    project_dir = tmp_path / "dbt_project"
    shutil.copytree(root / "dbt_project", project_dir, ignore=shutil.ignore_patterns("target", "logs"))
    project = lakehouse_dbt_project(project_dir=project_dir)
    assert manifest_is_stale(project)  # never parsed
    prepare_manifest(project, LakehouseSettings.build(str(tmp_path / "lake"), data_dir=str(tmp_path)), FITNESS)
    assert not manifest_is_stale(project)
    model = project_dir / "models" / "marts" / "scoring_candidates.sql"
    time.sleep(0.01)
    model.write_text(model.read_text() + "\n-- edited\n")
    os.utime(model, (time.time() + 2, time.time() + 2))
    assert manifest_is_stale(project)


PARSE_WHEN_GO = """
import sys, time
from pathlib import Path
from assets.dbt import lakehouse_dbt_project, prepare_manifest
from lakehouse.io.settings import LakehouseSettings
from ml.datasets import FITNESS
project_dir, data, go = sys.argv[1:]
project = lakehouse_dbt_project(project_dir=project_dir)
print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.01)
print("parsed" if prepare_manifest(project, LakehouseSettings.build(data + "/lake", data_dir=data), FITNESS,
                                   force=False) else "fresh", flush=True)
"""


def test_processes_loading_at_once_parse_a_stale_manifest_once(tmp_path):
    """Two processes (the UI's code server and a job, two test workers) find the manifest stale at
    the same moment: one parses, the other waits and then finds it fresh; the manifest is whole."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    project_dir = tmp_path / "dbt_project"
    shutil.copytree(root / "dbt_project", project_dir, ignore=shutil.ignore_patterns("target", "logs"))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PARSE_WHEN_GO, str(project_dir), str(tmp_path), str(go)],
                              cwd=root, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:  # both imported and holding a stale manifest: then both go at once
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    said = sorted(proc.communicate(timeout=300)[0].strip() for proc in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert said == ["fresh", "parsed"]
    assert json.loads((project_dir / "target" / "manifest.json").read_text())["nodes"]


def test_an_edited_dbt_model_reruns_itself_and_what_depends_on_it(tmp_path, monkeypatch):
    """Declarative automation: after a data engineer edits a model, the automation sensor requests
    the built partitions of that model and of everything downstream of it, and nothing else."""
    import shutil
    from pathlib import Path

    from orchestration.definitions import build_definitions

    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path))
    root = Path(__file__).resolve().parents[2]
    project_dir = tmp_path / "dbt_project"
    shutil.copytree(root / "dbt_project", project_dir, ignore=shutil.ignore_patterns("target", "logs"))
    settings = LakehouseSettings.from_env()
    defs = build_definitions(settings, dbt_project_dir=str(project_dir))
    graph = defs.resolve_asset_graph()
    instance = dg.DagsterInstance.ephemeral()
    days = ["2026-09-01", "2026-09-02"]
    for key in graph.materializable_asset_keys:  # every asset built for two days
        for day in days if graph.get(key).partitions_def else [None]:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=day))
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0  # nothing changed since it was built

    model = project_dir / "models" / "intermediate" / "int_class_popularity_daily.sql"
    model.write_text(model.read_text() + "\n-- a data engineer's edit\n")
    os.utime(model, (time.time() + 2, time.time() + 2))
    edited = build_definitions(settings, dbt_project_dir=str(project_dir))
    second = dg.evaluate_automation_conditions(defs=edited, instance=instance, cursor=first.cursor)
    requested = {(k.to_user_string(), pk) for r in second.results
                 for k in [r.key] for pk in (r.true_subset.expensively_compute_partition_keys()
                                            if r.true_subset.size else [])}
    keys = {k for k, _ in requested}
    assert ("intermediate/int_class_popularity_daily", "2026-09-01") in requested
    assert "gold/class_features_daily" in keys  # the mart built from it
    assert {pk for _, pk in requested} == set(days)  # only the built days
    assert not any(k.startswith(("bronze/", "staging/")) for k in keys)  # upstream untouched
    assert not {"gold/user_features_daily", "gold/training_examples"} & keys  # not downstream


def test_dbt_unit_tests_run_again_only_when_the_code_changed(tmp_path):
    """A build leaves dbt's unit tests out once they passed on this code; an edit brings them back."""
    import shutil
    from pathlib import Path

    from lakehouse.dbt_invocation import code_digest, unit_test_args, unit_tests_passed
    from ml.datasets import FITNESS, MAPPED

    root = Path(__file__).resolve().parents[2]
    project_dir = tmp_path / "dbt_project"
    shutil.copytree(root / "dbt_project", project_dir, ignore=shutil.ignore_patterns("target", "logs"))
    target = project_dir / "target"
    digest = code_digest(project_dir, FITNESS.dbt_vars)
    assert unit_test_args(target, digest) == []  # never passed here: they run
    unit_tests_passed(target, digest)
    assert unit_test_args(target, code_digest(project_dir, FITNESS.dbt_vars)) == [
        "--exclude-resource-type", "unit_test"]
    # another dataset's vars build other models: their unit tests have not passed
    assert unit_test_args(target, code_digest(project_dir, MAPPED.dbt_vars)) == []
    model = project_dir / "models" / "marts" / "scoring_candidates.sql"
    model.write_text(model.read_text() + "\n-- edited\n")
    edited = code_digest(project_dir, FITNESS.dbt_vars)
    assert edited != digest and unit_test_args(target, edited) == []
