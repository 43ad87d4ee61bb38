"""Bronze: landing files -> one Delta table per entity + the quarantine, daily partitions.

Write, audit, publish: the day's files are verified against their manifest, the rows checked
against the contract, and the staged rows audited (the bronze suites, ``no_shrink``,
``quarantine_share``) before one commit per table; a blocking failure commits nothing. The
checks are this asset's own asset checks (``assets.checks``)."""

import datetime as dt

import dagster as dg
from pydantic import Field

from assets.backfill import backfill_policy
from assets.checks import ReplaceConfig, check_evaluations, check_specs
from assets.landing import landing_key
from assets.resources import LakehouseResource
from lakehouse.contract import ENTITIES
from lakehouse.io import delta
from lakehouse.landing.ingest import QUARANTINE, AuditSettings, ingest_days
from lakehouse.quality.gates import BRONZE_AUDITS, MAX_QUARANTINE_SHARE, AuditFailedError, bronze_suites


def bronze_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", entity])


class IngestConfig(ReplaceConfig):
    """How strict the audit before the commit is (launchpad: ops: bronze_ingest: config)."""

    max_quarantine_share: float = Field(MAX_QUARANTINE_SHARE, description="a day of an entity whose "
                                        "rejected share of rows is above this fails")

    def audit(self) -> AuditSettings:
        return AuditSettings(allow_shrink=self.allow_shrink, min_kept_ratio=self.min_kept_ratio,
                             max_quarantine_share=self.max_quarantine_share)


def build_bronze_assets(partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    suites = {bronze_key(s.table): s for s in bronze_suites()}
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
        check_specs=check_specs(suites, BRONZE_AUDITS, partitions_def),
        partitions_def=partitions_def,
        # A range of days (a backfill, the demo) runs as one step: one Delta commit per table
        # (or runs of LAKEHOUSE_BACKFILL_DAYS_PER_RUN days: assets.backfill).
        backfill_policy=backfill_policy(),
        can_subset=False,
    )
    def bronze_ingest(context: dg.AssetExecutionContext, config: IngestConfig, lakehouse: LakehouseResource):
        settings = lakehouse.settings()
        days = _days(context.partition_time_window)
        window = f"{days[0]}..{days[-1]}"
        context.log.info(f"ingesting {len(days)} day(s) {window} from {settings.landing_uri}")
        try:
            report = ingest_days(settings, days, log=context.log.info, audit=config.audit())
        except AuditFailedError as exc:
            # report every check of the audit, then fail: nothing was committed
            for entity, outcomes in exc.outcomes.items():
                yield from check_evaluations(context, bronze_key(entity), outcomes, window)
            raise
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
                    "rows_replaced": r.rows_replaced,
                    # committed days whose rows this run changed: later days' features depend on
                    # them (orchestration.sensors.correction_sensor recomputes those)
                    "corrected_days": dg.MetadataValue.json([d.isoformat() for d in r.corrected_days]),
                    "dagster/row_count": r.rows_valid,
                    "quarantine_reasons": dg.MetadataValue.json(dict(r.reasons.most_common(20))),
                },
            )
            yield from check_evaluations(context, bronze_key(e.name), r.checks, window)
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
