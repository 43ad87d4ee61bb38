"""Great Expectations suites as Dagster asset checks on bronze and gold tables.

One multi-asset check per table validates the run's partitions in one GX run and reports each
named check of the suite (``lakehouse.quality``) as its own asset check. Blocking checks (the
ones that protect training) stop everything downstream when they fail.
"""


import datetime as dt
from typing import Mapping

import dagster as dg

from assets.bronze import bronze_key
from assets.resources import LakehouseResource
from lakehouse.contract import ENTITIES
from lakehouse.gates import validate_window
from lakehouse.quality import SuiteSpec, bronze_suite, gold_suite, training_examples_suite


def _window(context) -> tuple[dt.date, dt.date]:
    tw = context.partition_time_window
    return tw.start.date(), tw.end.date() - dt.timedelta(days=1)


def build_table_check(
    asset_key: dg.AssetKey,
    spec: SuiteSpec,
    *,
    layer: str,
    table: str,
    partition_col: str,
    partitions_def: dg.PartitionsDefinition,
) -> dg.AssetChecksDefinition:
    specs = [
        dg.AssetCheckSpec(
            name=check.name,
            asset=asset_key,
            blocking=check.blocking,
            partitions_def=partitions_def,
            description=f"{spec.table}: {check.name} ({'blocking' if check.blocking else 'warning'})",
        )
        for check in spec.checks
    ]

    @dg.multi_asset_check(name=f"gx_{layer}_{table}", specs=specs, description=spec.description)
    def table_checks(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource):
        start, end = _window(context)
        gate = validate_window(lakehouse.settings(), spec, layer=layer, table=table,
                               partition_col=partition_col, start=start, end=end)
        context.log.info(f"GX suite {spec.table}: {gate.rows} rows for {start}..{end} "
                         f"(previous window: {gate.previous_rows})")
        for o in gate.outcomes:
            yield dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=o.name,
                passed=bool(o.passed),
                severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
                description=o.description,
                metadata={"rows": gate.rows, "window": f"{start}..{end}", **_metadata(o.metadata)},
            )

    return table_checks


def _metadata(meta: Mapping) -> dict:
    out = {}
    for k, v in meta.items():
        out[k] = v if isinstance(v, (int, float, str, bool)) or v is None else dg.MetadataValue.json(v)
    return {k: v for k, v in out.items() if v is not None}


def build_checks(
    partitions_def: dg.PartitionsDefinition,
    gold_tables: Mapping[str, tuple[dg.AssetKey, str]] | None = None,
    negatives_per_positive: float = 4,
) -> list[dg.AssetChecksDefinition]:
    """Bronze suites for every entity; gold suites for the published marts that have one.

    ``gold_tables``: model name -> (asset key, partition column), from the dbt manifest.
    """
    checks = [
        build_table_check(bronze_key(e.name), bronze_suite(e), layer="bronze", table=e.name,
                          partition_col="landing_date", partitions_def=partitions_def)
        for e in ENTITIES
    ]
    for table, (key, partition_col) in (gold_tables or {}).items():
        try:
            spec = (training_examples_suite(negatives_per_positive) if table == "training_examples"
                    else gold_suite(table))
        except KeyError:
            continue  # a newly published model without a suite yet: dbt tests still guard it
        checks.append(build_table_check(key, spec, layer=key.path[0], table=table,
                                        partition_col=partition_col, partitions_def=partitions_def))
    return checks


__all__ = ["build_checks", "build_table_check"]
