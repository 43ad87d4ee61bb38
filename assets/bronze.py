"""Bronze: landing files -> one Delta table per entity + the quarantine, daily partitions."""

import datetime as dt

import dagster as dg

from assets.landing import landing_key
from assets.resources import LakehouseResource
from lakehouse import delta
from lakehouse.contract import ENTITIES
from lakehouse.ingest import QUARANTINE, ingest_days


def bronze_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", entity])


def build_bronze_assets(partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            key=bronze_key(e.name),
            deps=[landing_key(e.name)],
            description=f"Contract-checked `{e.name}` exports, Delta, partitioned by landing_date.",
            group_name="bronze",
            kinds={"delta"},
            metadata={"primary_key": ", ".join(e.key)},
        )
        for e in ENTITIES
    ] + [
        dg.AssetSpec(
            key=bronze_key(QUARANTINE),
            deps=[landing_key(e.name) for e in ENTITIES],
            description="Rows that broke the landing contract, with the reason and the raw record.",
            group_name="bronze",
            kinds={"delta"},
        )
    ]

    @dg.multi_asset(
        name="bronze_ingest",
        specs=specs,
        partitions_def=partitions_def,
        # A range of days (a backfill, the demo) runs as one step: one Delta commit per table.
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
    )
    def bronze_ingest(context: dg.AssetExecutionContext, lakehouse: LakehouseResource):
        settings = lakehouse.settings()
        window = context.partition_time_window
        days = _days(window)
        context.log.info(f"ingesting {len(days)} day(s) {days[0]}..{days[-1]} from {settings.landing_uri}")
        report = ingest_days(settings, days, log=context.log.info)
        context.log.info(report.summary())
        opts = settings.storage_options()
        for e in ENTITIES:
            r = report.entities[e.name]
            yield dg.MaterializeResult(
                asset_key=bronze_key(e.name),
                metadata={
                    "uri": settings.table_uri("bronze", e.name),
                    "delta_version": r.version,
                    "files": len(r.files),
                    "rows_read": r.rows_read,
                    "rows_valid": r.rows_valid,
                    "rows_quarantined": r.rows_quarantined,
                    "dagster/row_count": r.rows_valid,
                    "quarantine_reasons": dg.MetadataValue.json(dict(r.reasons.most_common(20))),
                },
            )
        yield dg.MaterializeResult(
            asset_key=bronze_key(QUARANTINE),
            metadata={
                "uri": settings.table_uri("bronze", QUARANTINE),
                "delta_version": report.quarantine_version,
                "rows_quarantined": report.rows_quarantined,
                "table_rows_total": delta.row_count(settings.table_uri("bronze", QUARANTINE), storage_options=opts),
            },
        )

    return bronze_ingest


def _days(window: dg.TimeWindow) -> list[dt.date]:
    """The days of a partition window (end exclusive)."""
    start, end = window.start.date(), window.end.date()
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]
