"""The code location loads, and the landing sensor and schedule ask for the right partitions."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import dagster as dg

from assets.resources import LakehouseResource
from lakehouse.settings import LakehouseSettings
from orchestration.sensors import landing_zone_sensor
from tests.landing_factory import DAY0, workout, write_day


def evaluate(settings, cursor=None):
    ctx = dg.build_sensor_context(cursor=cursor, resources={"lakehouse": LakehouseResource(
        uri=settings.uri, landing_uri=settings.landing_uri)})
    result = landing_zone_sensor(ctx)
    requests = result if isinstance(result, list) else []
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
    assert json.loads(cursor)[day1.isoformat()]


def test_landing_sensor_waits_for_the_day_manifest(tmp_path):
    from pathlib import Path

    s = LakehouseSettings.build(uri=str(tmp_path / "lake"), data_dir=str(tmp_path))
    lz = Path(s.landing_uri)
    day1 = DAY0 + dt.timedelta(days=1)
    write_day(lz, DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])
    write_day(lz, day1, with_catalogue=False, workouts=[workout("w2", "u1", "c1", day1)])
    (lz / "_manifests").mkdir()
    (lz / "_manifests" / f"date={DAY0}.json").write_text("{}")
    requests, cursor = evaluate(s)
    assert [r.partition_key for r in requests] == [DAY0.isoformat()]  # day 1 is still landing
    (lz / "_manifests" / f"date={day1}.json").write_text("{}")
    requests, _ = evaluate(s, cursor)
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
    assert any(name.startswith("gold/user_features_daily:") and "unique" in name and "positive" not in name
               for name in checks), "dbt tests should appear as asset checks"
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

    root = Path(__file__).resolve().parents[2]
    project_dir = tmp_path / "dbt_project"
    shutil.copytree(root / "dbt_project", project_dir, ignore=shutil.ignore_patterns("target", "logs"))
    project = lakehouse_dbt_project(project_dir=project_dir)
    assert manifest_is_stale(project)  # never parsed
    prepare_manifest(project, "local")
    assert not manifest_is_stale(project)
    model = project_dir / "models" / "marts" / "scoring_candidates.sql"
    time.sleep(0.01)
    model.write_text(model.read_text() + "\n-- edited\n")
    os.utime(model, (time.time() + 2, time.time() + 2))
    assert manifest_is_stale(project)


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
