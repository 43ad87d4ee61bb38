"""Gold: the marts dbt built, audited and then published as Delta tables (write-audit-publish).

A dbt model whose config has ``meta: {publish: {layer: gold, partition_by: <date column>}}``
becomes the asset ``gold/<name>``, downstream of its mart (``marts/<model>``). The step reads the
run's dates of every mart from the DuckDB working file (staged), runs each table's gold suite
(``lakehouse.quality``) and ``no_shrink`` against the committed Delta rows, and only when no
blocking check failed commits each table (one Delta commit replacing the run's dates). A blocking
failure commits nothing: gold, and so training, the recommendations and the served cache, stay as
they were, and the failed checks say why.
"""


from typing import Mapping

import dagster as dg

from assets.automation import rebuild_when_changed
from assets.backfill import backfill_policy
from assets.checks import ReplaceConfig, check_evaluations, check_specs, window_of
from assets.resources import LakehouseResource
from lakehouse.publish import PublishSpec, commit
from lakehouse.quality.checks import SuiteSpec, blocking_failures
from lakehouse.quality.gates import REPLACE_AUDITS, AuditFailedError, TableSuite, stage_and_audit


def gold_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["gold", name])


def build_gold_assets(published: Mapping[dg.AssetKey, PublishSpec], suites: Mapping[str, TableSuite],
                      partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    """``published``: the mart's asset key -> its publish spec (from the dbt manifest);
    ``suites``: gold table -> its suite (tables without one get the no_shrink audit only)."""
    spec_of = {gold_key(p.model): p for p in published.values()}
    specs = [
        dg.AssetSpec(
            key=gold_key(p.model),
            deps=[mart],
            description=f"The mart `{mart.path[-1]}` published as a Delta table "
                        f"(<lakehouse>/{p.layer}/{p.model}), partitioned by {p.partition_by}, after its audit.",
            group_name="gold",
            kinds={"delta"},
            automation_condition=rebuild_when_changed(),
            metadata={"partition_column": p.partition_by or ""},
        )
        for mart, p in published.items()
    ]
    keyed_suites = {gold_key(t): s for t, s in suites.items() if gold_key(t) in spec_of}
    # tables without a suite still get the replace audits
    bare = {k: TableSuite(spec=SuiteSpec(table=spec_of[k].model, checks=()), layer="gold", table=spec_of[k].model,
                          partition_col=spec_of[k].partition_by or "")
            for k in spec_of if k not in keyed_suites}

    @dg.multi_asset(
        name="publish_gold",
        specs=specs,
        check_specs=check_specs({**keyed_suites, **bare}, REPLACE_AUDITS, partitions_def),
        partitions_def=partitions_def,
        backfill_policy=backfill_policy(),
        can_subset=True,
    )
    def publish_gold(context: dg.AssetExecutionContext, config: ReplaceConfig, lakehouse: LakehouseResource):
        settings = lakehouse.settings()
        start, end = window_of(context)
        window = f"{start}..{end}"
        keys = [k for k in spec_of if k in context.selected_asset_keys]
        # write (dbt did) and audit; nothing is committed yet
        staged, outcomes = stage_and_audit(settings, {k: spec_of[k] for k in keys},
                                           {k: keyed_suites[k] for k in keys if k in keyed_suites},
                                           start=start, end=end, allow_shrink=config.allow_shrink,
                                           min_kept_ratio=config.min_kept_ratio)
        for key in keys:
            failed = [o.name for o in blocking_failures(outcomes[key])]
            context.log.info(f"audit {key.to_user_string()}: {staged[key].num_rows} rows for {window}: "
                             f"{'FAILED ' + ', '.join(failed) if failed else 'passed'}")
        if any(blocking_failures(o) for o in outcomes.values()):
            for key, outs in outcomes.items():
                yield from check_evaluations(context, key, outs, window)
            raise AuditFailedError({k.to_user_string(): o for k, o in outcomes.items()})
        for key in keys:  # publish
            result = commit(settings, spec_of[key], staged.pop(key), start=start, end=end)
            context.log.info(f"published {key.to_user_string()} -> {result.uri} v{result.version} "
                             f"({result.rows} rows for {window})")
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={"delta_uri": result.uri, "delta_version": result.version,
                          "dagster/row_count": result.rows, "published_range": window},
            )
            yield from check_evaluations(context, key, outcomes[key], window)

    return publish_gold


__all__ = ["build_gold_assets", "gold_key"]
