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
from assets.mapped import build_mapped_import, source_spec
from assets.model import GOLD_INPUTS, MAPPED_GOLD_INPUTS, blocking_checks_on_inputs, build_model_assets
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
from orchestration.partitions import daily_partitions_from
from orchestration.remediation import run_failure_remediation_sensor
from orchestration.resources import build_resources
from orchestration.schedules import daily_schedule, freshness_schedule
from orchestration.sensors import automation_sensor, landing_zone_sensor, new_champion_sensor


def build_definitions(settings: LakehouseSettings | None = None, dbt_project_dir: str | None = None) -> dg.Definitions:
    """``dbt_project_dir`` defaults to the project's dbt_project/ (tests point it at a copy).

    One setting picks the data: without LAKEHOUSE_MAPPING the simulator's landing zone and
    fitness models; with it, the mapping's import and the mapped dbt models. Everything from the
    gold tables on (checks, model, inference, cache, jobs) is the same graph."""
    settings = settings or LakehouseSettings.from_env()
    dataset = settings.dataset
    project = lakehouse_dbt_project(target=dbt_target_for(settings), project_dir=dbt_project_dir,
                                    dataset=dataset)
    if os.environ.get("DAGSTER_IS_DEV_CLI") or dbt_project_dir or manifest_is_stale(project):
        # `dagster dev` re-parses dbt on every reload, and any load re-parses after an edit,
        # so a data engineer's change shows up in the graph.
        prepare_manifest(project, dbt_target_for(settings))
    first_day = None
    if dataset == "mapped":
        from lakehouse.mapping import load_mapping

        first_day = load_mapping(settings.mapping_path).first_day  # a bad mapping: a clear error here
    daily_partitions = daily_partitions_from(first_day)
    dbt_models = build_dbt_assets(project, daily_partitions)
    if dataset == "mapped":
        landing, bronze = [source_spec(settings.mapping_path)], build_mapped_import(daily_partitions)
        gold_inputs, sensors = MAPPED_GOLD_INPUTS, []
    else:
        landing, bronze = build_landing_specs(daily_partitions), build_bronze_assets(daily_partitions)
        gold_inputs, sensors = GOLD_INPUTS, [landing_zone_sensor]
    manifest = load_manifest(project)
    gold = {spec.model: (LakehouseDbtTranslator().get_asset_key(manifest["nodes"][uid]), spec.partition_by)
            for uid, spec in published_models(manifest).items() if spec.partition_by}
    checks = build_checks(daily_partitions, gold, dbt_var(project, "negatives_per_positive", 4),
                          dataset=dataset)
    models = build_model_assets(blocking_checks_on_inputs(checks, gold_inputs), gold_inputs)
    recommendations, cache, freshness = build_serving_assets(daily_partitions, eager_latest(),
                                                             gold_inputs)
    return dg.Definitions(
        assets=[*landing, bronze, dbt_models, *models, recommendations, cache, remediation_log_spec()],
        asset_checks=[*checks, freshness],
        jobs=[daily_job, lakehouse_job, ingest_job, train_model_job, rescore_job, freshness_job],
        schedules=[daily_schedule, freshness_schedule],
        sensors=[*sensors, new_champion_sensor, automation_sensor, run_failure_remediation_sensor],
        resources=build_resources(settings, project),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
