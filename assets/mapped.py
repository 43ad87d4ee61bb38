"""Bring your own data: the mapping file's source -> the mapped bronze tables.

With ``LAKEHOUSE_MAPPING`` set, these assets stand where the simulator's landing zone and bronze
ingest stand: one import (``lakehouse.mapped.importer``) reads the files the mapping names (CSV,
Parquet or JSON Lines; a folder or S3) in batches, in bounded memory whatever their size,
validates all of them before writing anything, and writes ``bronze/mapped_interactions`` (the
partition's days replaced in one commit) and the ``mapped_users`` / ``mapped_items`` snapshots.
dbt's mapped models take it from there.
"""

import datetime as dt

import dagster as dg

from assets.backfill import backfill_policy
from assets.resources import LakehouseResource

SOURCE_KEY = dg.AssetKey(["landing", "mapped_source"])
MAPPED_TABLES = ("mapped_interactions", "mapped_users", "mapped_items")


def mapped_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", table])


def source_spec(mapping_path: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=SOURCE_KEY,
        description=f"The files your mapping file points at ({mapping_path}): interactions and "
                    "the optional user and item tables, in their own shape.",
        group_name="landing",
        metadata={"mapping_file": mapping_path},
        kinds={"csv", "parquet"},
    )


def build_mapped_import(partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    descriptions = {
        "mapped_interactions": "Interactions in the bronze contract (user_id, item_id, event_ts, "
                               "platform, event_type, rating, ctx_*), Delta, partitioned by event_date.",
        "mapped_users": "User side table (user_id, user_attr_*), the latest snapshot.",
        "mapped_items": "Item side table (item_id, item_attr_*), the latest snapshot.",
    }
    specs = [dg.AssetSpec(key=mapped_key(t), deps=[SOURCE_KEY], description=descriptions[t],
                          group_name="bronze", kinds={"delta"}) for t in MAPPED_TABLES]

    @dg.multi_asset(
        name="mapped_import",
        specs=specs,
        partitions_def=partitions_def,
        # a range of days (the first import, a backfill) is one read of the source, one commit
        # (unless LAKEHOUSE_BACKFILL_DAYS_PER_RUN splits it: assets.backfill)
        backfill_policy=backfill_policy(),
        can_subset=False,
    )
    def mapped_import(context: dg.AssetExecutionContext, lakehouse: LakehouseResource):
        from lakehouse.mapped.importer import import_dataset
        from lakehouse.mapped.mapping_file import load_mapping

        settings = lakehouse.settings()
        if not settings.mapping_path:
            raise dg.Failure(description="no mapping file: set LAKEHOUSE_MAPPING to your mapping YAML")
        mapping = load_mapping(settings.mapping_path)
        window = context.partition_time_window
        start, end = window.start.date(), window.end.date()
        days = [start + dt.timedelta(days=i) for i in range((end - start).days)]
        context.log.info(f"importing {days[0]}..{days[-1]} with {settings.mapping_path}")
        report = import_dataset(settings, mapping, days=days, log=context.log.info)
        context.log.info(report.summary())
        for table in MAPPED_TABLES:
            yield dg.MaterializeResult(
                asset_key=mapped_key(table),
                metadata={"uri": settings.table_uri("bronze", table), **report.metadata(table)},
            )

    return mapped_import
