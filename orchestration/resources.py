"""Resources chosen per environment by one setting: LAKEHOUSE_URI (folder, or s3://bucket/prefix)."""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_dbt import DbtProject

from assets.dbt import dbt_resource, dbt_target_for
from assets.resources import LakehouseResource, MlflowResource
from lakehouse.io.settings import LakehouseSettings


def build_resources(settings: LakehouseSettings, project: DbtProject) -> dict[str, object]:
    resources: dict[str, object] = {
        "lakehouse": LakehouseResource(
            uri=settings.uri,
            landing_uri=settings.landing_uri,
            duckdb_path=settings.duckdb_path,
            data_dir=settings.data_dir,
            mapping=settings.mapping_path or "",
        ),
        "dbt": dbt_resource(project, dbt_target_for(settings)),
        # MLFLOW_TRACKING_URI (read at run time) picks any tracking server; default: SQLite
        # under the data folder
        "mlflow": MlflowResource(),
    }
    if settings.is_s3:
        # Keys never live in config: EnvVar keeps them out of the UI and of run records.
        resources["s3"] = S3Resource(
            endpoint_url=dg.EnvVar("AWS_ENDPOINT_URL"),
            aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
            region_name=dg.EnvVar("AWS_REGION"),
        )
    else:
        resources["s3"] = S3Resource()  # declared by the cache asset; used only on S3
    return resources
