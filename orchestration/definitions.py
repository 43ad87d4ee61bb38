"""The code location. Built lazily by Dagster (``@dg.definitions``): nothing runs at import."""

from __future__ import annotations

import os

import dagster as dg

from assets.bronze import build_bronze_assets
from assets.bronze import bronze_key
from assets.checks import build_committed_checks
from assets.dbt import (
    LakehouseDbtTranslator,
    build_dbt_assets,
    dbt_target_for,
    lakehouse_dbt_project,
    load_manifest,
    prepare_manifest,
)
from assets.gold import build_gold_assets
from assets.landing import build_landing_specs
from assets.automation import eager_latest
from assets.mapped import build_mapped_import, source_spec
from assets.model import blocking_checks_on_inputs, build_model_assets
from assets.ops import remediation_log_spec
from assets.retrieval import build_retrieval_assets
from assets.serving import build_serving_assets
from lakehouse.dbt_invocation import project_var
from lakehouse.io.settings import LakehouseSettings
from lakehouse.publish import published_models
from ml.datasets import Dataset, dataset_for
from orchestration.jobs import (
    daily_job,
    embeddings_job,
    freshness_job,
    ingest_job,
    lakehouse_job,
    recompute_job,
    rescore_job,
    train_model_job,
)
from orchestration.partitions import daily_partitions_from
from orchestration.remediation import run_failure_remediation_sensor
from orchestration.resources import build_resources
from orchestration.schedules import daily_schedule, embeddings_schedule, freshness_schedule
from orchestration.sensors import automation_sensor, correction_sensor, landing_zone_sensor, new_champion_sensor


def _landing_zone(settings: LakehouseSettings, dataset: Dataset, partitions: dg.PartitionsDefinition):
    """The simulator's landing zone: its files, bronze, and the sensors that watch it (its bronze
    audits run inside the bronze assets)."""
    return (build_landing_specs(partitions), build_bronze_assets(partitions), [],
            [landing_zone_sensor, correction_sensor])


def _mapping_import(settings: LakehouseSettings, dataset: Dataset, partitions: dg.PartitionsDefinition):
    """A mapping file's source and its import into bronze. The import refuses a bad source whole
    before writing; its suite checks what it committed."""
    checks = build_committed_checks("gx_bronze", {bronze_key(s.table): s for s in dataset.bronze_suites()},
                                    partitions)
    return [source_spec(settings.mapping_path)], build_mapped_import(partitions), [checks], []


# Bronze's Dagster assets and sensors for each way data arrives (`Dataset.bronze_source`; they
# live here because `ml.datasets` may not import Dagster). Everything from the dbt models on asks
# the `Dataset` itself.
BRONZE_SOURCES = {"landing_zone": _landing_zone, "mapping_import": _mapping_import}


def build_definitions(settings: LakehouseSettings | None = None, dbt_project_dir: str | None = None) -> dg.Definitions:
    """``dbt_project_dir`` defaults to the project's dbt_project/ (tests point it at a copy).

    One setting picks the data: without LAKEHOUSE_MAPPING the simulator's landing zone and
    fitness models; with it, the mapping's import and the mapped dbt models. Everything from the
    gold tables on (checks, model, inference, cache, jobs) is the same graph."""
    settings = settings or LakehouseSettings.from_env()
    dataset = dataset_for(settings)
    project = lakehouse_dbt_project(target=dbt_target_for(settings), project_dir=dbt_project_dir,
                                    dataset=dataset)
    # `dagster dev` re-parses dbt on every reload, and any load re-parses after an edit, so a
    # data engineer's change shows up in the graph.
    prepare_manifest(project, settings, dataset, force=bool(os.environ.get("DAGSTER_IS_DEV_CLI") or dbt_project_dir))
    daily_partitions = daily_partitions_from(dataset.first_day(settings))
    dbt_models = build_dbt_assets(project, daily_partitions, dataset)
    landing, bronze, checks, sensors = BRONZE_SOURCES[dataset.bronze_source](settings, dataset, daily_partitions)
    gold_inputs = dataset.gold_inputs
    manifest = load_manifest(project)
    # published marts (daily, by their partition column) -> gold Delta tables, audited first
    published = {LakehouseDbtTranslator().get_asset_key(manifest["nodes"][uid]): spec
                 for uid, spec in published_models(manifest).items() if spec.partition_by}
    suites = {s.table: s for s in dataset.gold_suites({p.model: p.partition_by for p in published.values()},
                                                      project_var("negatives_per_positive", 4,
                                                                  project.project_dir))}
    gold = build_gold_assets(published, suites, daily_partitions)
    models = build_model_assets(blocking_checks_on_inputs([gold], gold_inputs), gold_inputs)
    recommendations, cache, freshness = build_serving_assets(daily_partitions, eager_latest(),
                                                             gold_inputs)
    retrieval = build_retrieval_assets(daily_partitions, eager_latest(), gold_inputs)
    return dg.Definitions(
        assets=[*landing, bronze, dbt_models, gold, *models, *retrieval, recommendations, cache,
                remediation_log_spec()],
        asset_checks=[*checks, freshness],
        jobs=[daily_job, lakehouse_job, ingest_job, recompute_job, train_model_job, rescore_job,
              freshness_job, embeddings_job],
        schedules=[daily_schedule, freshness_schedule, embeddings_schedule],
        sensors=[*sensors, new_champion_sensor, automation_sensor, run_failure_remediation_sensor],
        resources=build_resources(settings, project),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
