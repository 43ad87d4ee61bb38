"""The code location. Built lazily by Dagster (``@dg.definitions``): nothing runs at import."""

from __future__ import annotations

import os

import dagster as dg

from assets.bronze import build_bronze_assets
from assets.checks import build_checks
from assets.dbt import (
    LakehouseDbtTranslator,
    build_dbt_assets,
    dbt_target_for,
    dbt_var,
    lakehouse_dbt_project,
    load_manifest,
    manifest_is_stale,
    prepare_manifest,
)
from assets.landing import build_landing_specs
from assets.automation import eager_latest
from assets.model import blocking_checks_on_inputs, build_model_assets
from assets.ops import remediation_log_spec
from assets.serving import build_serving_assets
from lakehouse.publish import published_models
from lakehouse.settings import LakehouseSettings
from orchestration.jobs import (
    daily_job,
    freshness_job,
    ingest_job,
    lakehouse_job,
    rescore_job,
    train_model_job,
)
from orchestration.partitions import daily_partitions
from orchestration.remediation import run_failure_remediation_sensor
from orchestration.resources import build_resources
from orchestration.schedules import daily_schedule, freshness_schedule
from orchestration.sensors import automation_sensor, landing_zone_sensor, new_champion_sensor


def build_definitions(settings: LakehouseSettings | None = None, dbt_project_dir: str | None = None) -> dg.Definitions:
    """``dbt_project_dir`` defaults to the project's dbt_project/ (tests point it at a copy)."""
    settings = settings or LakehouseSettings.from_env()
    project = lakehouse_dbt_project(target=dbt_target_for(settings), project_dir=dbt_project_dir)
    if os.environ.get("DAGSTER_IS_DEV_CLI") or dbt_project_dir or manifest_is_stale(project):
        # `dagster dev` re-parses dbt on every reload, and any load re-parses after an edit,
        # so a data engineer's change shows up in the graph.
        prepare_manifest(project, dbt_target_for(settings))
    dbt_models = build_dbt_assets(project, daily_partitions)
    bronze = build_bronze_assets(daily_partitions)
    manifest = load_manifest(project)
    gold = {spec.model: (LakehouseDbtTranslator().get_asset_key(manifest["nodes"][uid]), spec.partition_by)
            for uid, spec in published_models(manifest).items() if spec.partition_by}
    checks = build_checks(daily_partitions, gold, dbt_var(project, "negatives_per_positive", 4))
    models = build_model_assets(blocking_checks_on_inputs(checks))
    recommendations, cache, freshness = build_serving_assets(daily_partitions, eager_latest())
    return dg.Definitions(
        assets=[*build_landing_specs(daily_partitions), bronze, dbt_models, *models,
                recommendations, cache, remediation_log_spec()],
        asset_checks=[*checks, freshness],
        jobs=[daily_job, lakehouse_job, ingest_job, train_model_job, rescore_job, freshness_job],
        schedules=[daily_schedule, freshness_schedule],
        sensors=[landing_zone_sensor, new_champion_sensor, automation_sensor,
                 run_failure_remediation_sensor],
        resources=build_resources(settings, project),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
