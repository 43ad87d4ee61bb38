"""Quality checks as Dagster asset checks, write-audit-publish style.

The checks of a table are declared on the asset that COMMITS it (``bronze_ingest`` for bronze,
``publish_gold`` for gold) and evaluated on the rows staged for the commit, before it: the Great
Expectations suites of ``lakehouse.quality`` plus the replace audits of ``lakehouse.quality.gates``
(``no_shrink``; ``quarantine_share`` for bronze). A blocking failure is reported as a failed
check, the step fails, and nothing is committed, so every table, the recommendations and the
served cache stay as they were. Each outcome becomes the asset check of the same name.

Each outcome is reported for every day of the run's window (`check_evaluations`): a backfill
commits many days in one step, and Dagster 1.13 records a partitioned check evaluated there
(`AssetCheckResult` takes no partition) as "Skipped" on every planned day, even when it passed.
One evaluation per day, tied to that day's materialization, shows each day Passed or Failed.
"""

import datetime as dt
import typing
from typing import Iterable, Iterator, Mapping, Sequence

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


# What a check's page says of the days it was not evaluated on
NOT_RUN = ("Evaluated on every day of a run, in the step that commits the table; a day shown "
           "Skipped or Execution failed was planned in a run whose step failed before its audit "
           "(an upstream step failed, or the step could not read its input): that run's log says why.")


def check_specs(suites: Mapping[dg.AssetKey, TableSuite], audits: Sequence[tuple[str, str]],
                partitions_def: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
    """One spec per named check of each table's suite, plus the (blocking) audits."""
    specs = []
    for key, s in suites.items():
        for check in s.spec.checks:
            specs.append(dg.AssetCheckSpec(
                name=check.name, asset=key, blocking=check.blocking, partitions_def=partitions_def,
                description=f"{s.spec.table}: {check.name} ({'blocking' if check.blocking else 'warning'}), "
                            f"on the rows staged for the commit. {NOT_RUN}"))
        for name, description in audits:
            specs.append(dg.AssetCheckSpec(name=name, asset=key, blocking=True, partitions_def=partitions_def,
                                           description=f"{s.spec.table}: {description} (blocking). {NOT_RUN}"))
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


def check_evaluations(context, key: dg.AssetKey, outcomes: Iterable[CheckOutcome], window: str,
                      wanted: set[dg.AssetCheckKey] | None = None) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    """The outcomes of a run's audit as Dagster check events: each check's output once, and its
    result for every day of the run (a day, or a backfill's range), tied to the day's latest
    materialization (yield the table's MaterializeResult first: then it is this run's). The
    audit judged the run's window as a whole (``window`` in the metadata)."""
    days = list(context.partition_keys)
    targets = _latest_materializations(context.instance, key, days)
    assets_def = context.op_execution_context.assets_def
    for result in check_results(key, outcomes, window, wanted):
        ck = dg.AssetCheckKey(key, result.check_name)
        yield dg.Output(None, output_name=assets_def.get_output_name_for_asset_check_key(ck))
        for day in days:
            yield dg.AssetCheckEvaluation(
                asset_key=key, check_name=result.check_name, passed=result.passed,
                metadata=result.metadata, severity=result.severity, description=result.description,
                blocking=assets_def.get_spec_for_check_key(ck).blocking, partition=day,
                target_materialization_data=targets.get(day))


def _target_type() -> type:
    """The type of `AssetCheckEvaluation.target_materialization_data` (Dagster 1.13 takes it in
    the public constructor but does not export its name)."""
    hint = typing.get_type_hints(dg.AssetCheckEvaluation)["target_materialization_data"]
    return next(t for t in typing.get_args(hint) if t is not type(None))


def _latest_materializations(instance: dg.DagsterInstance, key: dg.AssetKey, days: Sequence[str]) -> dict:
    """day -> its latest materialization (as the check's target), for the days that have one.
    One query for this run's days (the newest records); another per day only for the rest."""
    found = {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(days)), limit=len(days)).records
    for r in records:
        found.setdefault(r.partition_key, r)
    for day in set(days) - set(found):
        older = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1).records
        if older:
            found[day] = older[0]
    target = _target_type()
    return {day: target(storage_id=r.storage_id, run_id=r.run_id, timestamp=r.timestamp)
            for day, r in found.items()}


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
            yield from check_evaluations(context, key_of[(s.layer, s.table)], gate.outcomes, f"{start}..{end}",
                                         selected)

    return committed_checks


__all__ = ["ReplaceConfig", "build_committed_checks", "check_evaluations", "check_results", "check_specs",
           "window_of"]
