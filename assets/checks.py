"""Quality checks as Dagster asset checks, write-audit-publish style.

The checks of a table are declared on the asset that COMMITS it (``bronze_ingest`` for bronze,
``publish_gold`` for gold) and evaluated on the rows staged for the commit, before it: the Great
Expectations suites of ``lakehouse.quality`` plus the replace audits of ``lakehouse.quality.gates``
(``no_shrink``; ``quarantine_share`` for bronze). A blocking failure is reported as a failed
check, the step fails, and nothing is committed, so every table, the recommendations and the
served cache stay as they were. Each outcome becomes the asset check of the same name.
"""

import datetime as dt
from typing import Iterable, Mapping, Sequence

import dagster as dg
from pydantic import Field

from assets.resources import LakehouseResource
from lakehouse.quality.checks import CheckOutcome
from lakehouse.quality.gates import MIN_KEPT_RATIO, TableSuite, validate_tables


class ReplaceConfig(dg.Config):
    """How strict the audit before a commit that replaces days is (the committing step's run
    config in the launchpad, e.g. ops: publish_gold: config: {allow_shrink: true})."""

    allow_shrink: bool = Field(False, description="let a re-run replace a committed day with far "
                               "fewer rows (a day really was smaller)")
    min_kept_ratio: float = Field(MIN_KEPT_RATIO, description="a re-run keeps at least this share of "
                                  "a day's committed rows, unless allow_shrink")


def check_specs(suites: Mapping[dg.AssetKey, TableSuite], audits: Sequence[tuple[str, str]],
                partitions_def: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
    """One spec per named check of each table's suite, plus the (blocking) audits."""
    specs = []
    for key, s in suites.items():
        for check in s.spec.checks:
            specs.append(dg.AssetCheckSpec(
                name=check.name, asset=key, blocking=check.blocking, partitions_def=partitions_def,
                description=f"{s.spec.table}: {check.name} ({'blocking' if check.blocking else 'warning'}), "
                            "on the rows staged for the commit"))
        for name, description in audits:
            specs.append(dg.AssetCheckSpec(name=name, asset=key, blocking=True, partitions_def=partitions_def,
                                           description=f"{s.spec.table}: {description} (blocking)"))
    return specs


def check_results(key: dg.AssetKey, outcomes: Iterable[CheckOutcome], window: str,
                  wanted: set[dg.AssetCheckKey] | None = None) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            asset_key=key,
            check_name=o.name,
            passed=bool(o.passed),
            severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
            description=o.description,
            metadata={"window": window, **_metadata(o.metadata)},
        )
        for o in outcomes
        if wanted is None or dg.AssetCheckKey(key, o.name) in wanted
    ]


def _metadata(meta: Mapping) -> dict:
    out = {}
    for k, v in meta.items():
        out[k] = v if isinstance(v, (int, float, str, bool)) or v is None else dg.MetadataValue.json(v)
    return {k: v for k, v in out.items() if v is not None}


def window_of(context) -> tuple[dt.date, dt.date]:
    """The run's partition window as inclusive dates."""
    tw = context.partition_time_window
    return tw.start.date(), tw.end.date() - dt.timedelta(days=1)


def build_committed_checks(name: str, suites: Mapping[dg.AssetKey, TableSuite],
                           partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    """Checks of tables committed by code that audits before writing on its own terms (the
    mapped import refuses a bad source whole): the suites on the committed window."""
    specs = check_specs(suites, (), partitions_def)

    @dg.multi_asset_check(name=name, specs=specs, can_subset=True,
                          description="Great Expectations suites: " + ", ".join(s.table for s in suites.values()))
    def committed_checks(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource):
        start, end = window_of(context)
        selected = context.selected_asset_check_keys
        key_of = {(s.layer, s.table): key for key, s in suites.items()}
        wanted = [s for key, s in suites.items() if any(k.asset_key == key for k in selected)]
        for s, gate in validate_tables(lakehouse.settings(), wanted, start=start, end=end):
            yield from check_results(key_of[(s.layer, s.table)], gate.outcomes, f"{start}..{end}", selected)

    return committed_checks


__all__ = ["ReplaceConfig", "build_committed_checks", "check_results", "check_specs", "window_of"]
