"""Great Expectations suites as Dagster asset checks on bronze and gold tables.

One multi-asset check per layer (``gx_bronze``, ``gx_gold``) validates the run's partitions of
every table of that layer and reports each named check of each suite (``lakehouse.quality``) as
its own asset check. Blocking checks (the ones that protect training) stop everything downstream
when they fail.
"""

import datetime as dt
from typing import Mapping

import dagster as dg

from assets.bronze import bronze_key
from assets.resources import LakehouseResource
from lakehouse.gates import TableSuite, bronze_suites, gold_suites, validate_tables


def _window(context) -> tuple[dt.date, dt.date]:
    tw = context.partition_time_window
    return tw.start.date(), tw.end.date() - dt.timedelta(days=1)


def build_layer_checks(name: str, suites: Mapping[dg.AssetKey, TableSuite],
                       partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    """One op validates every table of a layer (one GX import, reference ids read once), and
    reports each named check of each suite as its own asset check."""
    specs = [
        dg.AssetCheckSpec(
            name=check.name,
            asset=key,
            blocking=check.blocking,
            partitions_def=partitions_def,
            description=f"{s.spec.table}: {check.name} ({'blocking' if check.blocking else 'warning'})",
        )
        for key, s in suites.items()
        for check in s.spec.checks
    ]

    @dg.multi_asset_check(name=name, specs=specs, can_subset=True,
                          description="Great Expectations suites: " + ", ".join(s.table for s in suites.values()))
    def layer_checks(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource):
        start, end = _window(context)
        selected = context.selected_asset_check_keys
        key_of = {(s.layer, s.table): key for key, s in suites.items()}
        wanted = [s for key, s in suites.items() if any(k.asset_key == key for k in selected)]
        for s, gate in validate_tables(lakehouse.settings(), wanted, start=start, end=end):
            key = key_of[(s.layer, s.table)]
            failed = [o.name for o in gate.outcomes if not o.passed]
            context.log.info(f"GX {gate.table}: {gate.rows} rows for {start}..{end} "
                             f"(previous window {gate.previous_rows}); failed: {failed or 'none'}")
            for o in gate.outcomes:
                if dg.AssetCheckKey(key, o.name) not in selected:
                    continue
                yield dg.AssetCheckResult(
                    asset_key=key,
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
    dataset: str = "fitness",
) -> list[dg.AssetChecksDefinition]:
    """Bronze suites for every entity (or the mapped interactions); gold suites for the published
    marts that have one.

    ``gold_tables``: model name -> (asset key, partition column), from the dbt manifest.
    """
    bronze = {bronze_key(s.table): s for s in bronze_suites(dataset)}
    gold_tables = gold_tables or {}
    gold = {gold_tables[s.table][0]: s
            for s in gold_suites({t: col for t, (_, col) in gold_tables.items()}, negatives_per_positive,
                                 dataset=dataset)}
    checks = [build_layer_checks("gx_bronze", bronze, partitions_def)]
    if gold:
        checks.append(build_layer_checks("gx_gold", gold, partitions_def))
    return checks


__all__ = ["build_checks", "build_layer_checks"]
