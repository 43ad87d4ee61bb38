"""A data engineer publishes a new model to the gold layer with dbt config only."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
START = dt.date(2026, 9, 1)

NEW_MODEL = """
{{ config(materialized='table', meta={'publish': {'layer': 'gold', 'partition_by': 'feature_date'}}) }}
-- workouts per platform per day: a mart a data engineer adds without touching Python
select event_date as feature_date, platform, count(*) as workouts
from {{ ref('stg_app__workouts') }}
group by 1, 2
"""


def test_new_dbt_model_with_publish_meta_becomes_a_gold_delta_table(tmp_path, monkeypatch):
    project = tmp_path / "dbt_project"
    shutil.copytree(ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs", ".duckdb_extensions"))
    (project / "models" / "marts" / "platform_daily_workouts.sql").write_text(NEW_MODEL)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LAKEHOUSE_URI", raising=False)
    settings = LakehouseSettings.from_env()
    subprocess.run([sys.executable, "-m", "simulator", "generate", "--size", "tiny", "--seed", "3",
                    "--days", "2", "--start-date", START.isoformat(), "--landing", settings.landing_uri],
                   check=True, capture_output=True)

    from orchestration.definitions import build_definitions

    defs = build_definitions(settings, dbt_project_dir=str(project))
    key = dg.AssetKey(["gold", "platform_daily_workouts"])
    graph = defs.resolve_asset_graph()
    assert key in graph.get_all_asset_keys()
    mart = dg.AssetKey(["marts", "platform_daily_workouts"])
    assert graph.get(key).parent_keys == {mart}  # published after its audit, from the mart dbt built
    assert dg.AssetKey(["staging", "stg_app__workouts"]) in graph.get(mart).parent_keys
    job = defs.resolve_job_def("daily_lakehouse_job")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, tags={
        "dagster/asset_partition_range_start": START.isoformat(),
        "dagster/asset_partition_range_end": (START + dt.timedelta(days=1)).isoformat()})
    assert result.success
    df = delta.read(settings.table_uri("gold", "platform_daily_workouts"))
    assert df.height > 0 and set(df["platform"].unique()) <= {"bike", "tread", "app"}
    assert df["workouts"].sum() == delta.row_count(settings.table_uri("bronze", "workouts"))
