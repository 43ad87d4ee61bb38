"""Great Expectations suites as Dagster asset checks on bronze and gold tables.

One multi-asset check per table validates the run's partitions in one GX run and reports each
named check of the suite (``lakehouse.quality``) as its own asset check. Blocking checks (the
ones that protect training) stop everything downstream when they fail.
"""


import datetime as dt
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TableSuite:
    asset_key: dg.AssetKey
    spec: SuiteSpec
    layer: str
    table: str
    partition_col: str


def build_layer_checks(name: str, suites: list[TableSuite],
                       partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    """One op validates every table of a layer (one process start, one GX import), and reports
    each named check of each suite as its own asset check."""
    specs = [
        dg.AssetCheckSpec(
            name=check.name,
            asset=s.asset_key,
            blocking=check.blocking,
            partitions_def=partitions_def,
            description=f"{s.spec.table}: {check.name} ({'blocking' if check.blocking else 'warning'})",
        )
        for s in suites
        for check in s.spec.checks
    ]

    @dg.multi_asset_check(name=name, specs=specs, can_subset=True,
                          description="Great Expectations suites: " + ", ".join(s.table for s in suites))
    def layer_checks(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource):
        start, end = _window(context)
        selected = context.selected_asset_check_keys
        settings = lakehouse.settings()
        for s in suites:
            if not any(k.asset_key == s.asset_key for k in selected):
                continue
            gate = validate_window(settings, s.spec, layer=s.layer, table=s.table,
                                   partition_col=s.partition_col, start=start, end=end)
            failed = [o.name for o in gate.outcomes if not o.passed]
            context.log.info(f"GX {s.layer}/{s.table}: {gate.rows} rows for {start}..{end} "
                             f"(previous window {gate.previous_rows}); failed: {failed or 'none'}")
            for o in gate.outcomes:
                if dg.AssetCheckKey(s.asset_key, o.name) not in selected:
                    continue
                yield dg.AssetCheckResult(
                    asset_key=s.asset_key,
                    check_name=o.name,
                    passed=bool(o.passed),
                    severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
                    description=o.description,
                    metadata={"rows": gate.rows, "window": f"{start}..{end}", **_metadata(o.metadata)},
                )

    return layer_checks


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
    bronze = [TableSuite(bronze_key(e.name), bronze_suite(e), "bronze", e.name, "landing_date")
              for e in ENTITIES]
    gold = []
    for table, (key, partition_col) in (gold_tables or {}).items():
        try:
            spec = (training_examples_suite(negatives_per_positive) if table == "training_examples"
                    else gold_suite(table))
        except KeyError:
            continue  # a newly published model without a suite yet: its dbt tests still guard it
        gold.append(TableSuite(key, spec, key.path[0], table, partition_col))
    checks = [build_layer_checks("gx_bronze", bronze, partitions_def)]
    if gold:
        checks.append(build_layer_checks("gx_gold", gold, partitions_def))
    return checks


__all__ = ["build_checks", "build_layer_checks", "TableSuite"]
