"""dbt models as assets: staging -> intermediate -> marts, built in the DuckDB working file.

The dbt project is declared once here (``lakehouse_dbt_project``); its manifest is read when the
definitions load, never at import. Daily partitions reach dbt as the environment variables
LAKEHOUSE_RUN_START_DATE / LAKEHOUSE_RUN_END_DATE (``run_env``), read by the ``run_range`` macro
at execution only: as ``--vars`` they would differ from the parse's and make dbt re-parse the
whole project on every run (``--vars`` still work by hand).
The marts that ask to be published become gold Delta tables in a step of their own, after
their audit (``assets.gold``): dbt writes, the checks audit, then gold is published.
dbt's unit tests check the SQL on fixed inputs, so a build runs them when the project's code
changed since they last passed (``lakehouse.dbt_invocation.unit_test_args``), not again in
every daily partition.
"""


import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from assets.automation import rebuild_when_changed
from assets.backfill import backfill_policy
from assets.resources import LakehouseResource
from lakehouse.dbt_invocation import (DBT_PROJECT_DIR, code_digest, dbt_env, dbt_executable, dbt_target_for,
                                      project_files, run_env, unit_test_args, unit_tests_passed)
from lakehouse.io.settings import LakehouseSettings
from ml.datasets import FITNESS, Dataset


def lakehouse_dbt_project(target: str = "local", project_dir: str | Path | None = None,
                          dataset: Dataset = FITNESS) -> DbtProject:
    """The dbt project, declared once; its profile lives inside it. Each dataset (whose
    `Dataset.dbt_vars` enable one family of models) has its own target folder
    (`Dataset.dbt_target`), so switching datasets never reads the other's manifest. Every dbt
    invocation of the project passes the same dataset's vars (parse and build alike: a differing
    var would make dbt re-parse into the other family of models)."""
    path = Path(project_dir) if project_dir else DBT_PROJECT_DIR
    return DbtProject(project_dir=path, profiles_dir=path, target=target,
                      target_path=Path(dataset.dbt_target))


def dbt_resource(project: DbtProject, target: str) -> DbtCliResource:
    return DbtCliResource(project_dir=project, target=target, dbt_executable=dbt_executable())


def prepare_manifest(project: DbtProject, settings: LakehouseSettings, dataset: Dataset,
                     force: bool = True) -> bool:
    """`dbt parse` -> target/manifest.json (what the asset graph is built from), with the profile's
    variables taken from `settings` (an empty LAKEHOUSE_DUCKDB_PATH in the caller's environment,
    as `make byod` sets it, would otherwise reach the profile as an empty path). `force=False`
    parses only a stale manifest. True when this call parsed.

    Processes that load the code location at the same time (the UI's code server and the daemon,
    a job launched beside `make demo`, the test workers) share the target folder: one parses at a
    time, and the others then find the manifest fresh instead of reading a half-written one."""
    if not force and not manifest_is_stale(project):
        return False
    target = Path(project.project_dir) / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and not manifest_is_stale(project):
            return False  # another process parsed while this one waited
        with environ(dbt_env(settings)):
            dbt_resource(project, dbt_target_for(settings)).cli(
                ["parse", "--quiet", "--vars", json.dumps(dataset.dbt_vars)],
                target_path=Path(project.target_path)).wait()
        return True


def manifest_is_stale(project: DbtProject) -> bool:
    """True when the manifest is missing or older than any file of the dbt project, so an edit
    by a data engineer is picked up on the next load (cheap: file mtimes only)."""
    manifest = Path(project.manifest_path)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(p.stat().st_mtime > built for p in project_files(project.project_dir))


def load_manifest(project: DbtProject) -> dict:
    return json.loads(Path(project.manifest_path).read_text())


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """dagster-dbt runs dbt with this process's environment: set the profile's variables for the call."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LakehouseDbtTranslator(DagsterDbtTranslator):
    """bronze sources keep their bronze keys; models are keyed by their folder (staging/...,
    intermediate/..., marts/...). A published mart's gold Delta table is another asset
    (assets.gold), downstream of it."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        rtype = dbt_resource_props["resource_type"]
        if rtype == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        fqn = dbt_resource_props.get("fqn") or []
        # the innermost folder: staging/, intermediate/, marts/ (also under mapped/)
        folder = fqn[-2] if len(fqn) > 2 else "dbt"
        return dg.AssetKey([folder, dbt_resource_props["name"]])

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            return rebuild_when_changed()
        return None

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        key = self.get_asset_key(dbt_resource_props)
        return key.path[0] if key.path[0] in ("staging", "intermediate", "marts") else "dbt"


def build_dbt_assets(project: DbtProject, partitions_def: dg.TimeWindowPartitionsDefinition,
                     dataset: Dataset) -> dg.AssetsDefinition:
    @dbt_assets(
        # the parsed dict, not the path: dagster-dbt caches manifests by path within a process,
        # and a reload after a data engineer's edit must see the new code versions
        manifest=load_manifest(project),
        project=project,
        name="dbt_models",
        partitions_def=partitions_def,
        backfill_policy=backfill_policy(),
        dagster_dbt_translator=LakehouseDbtTranslator(),
    )
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, lakehouse: LakehouseResource):
        settings = lakehouse.settings()
        window = context.partition_time_window
        start, end = window.start.date(), window.end.date() - dt.timedelta(days=1)
        target = Path(project.project_dir) / project.target_path
        digest = code_digest(project.project_dir, dataset.dbt_vars)
        skip = unit_test_args(target, digest)
        # the same vars as the parse's, so dbt parses only what changed (partial parsing)
        args = ["build", "--vars", json.dumps(dataset.dbt_vars), "--target", dbt_target_for(settings), *skip]
        range_env = run_env(start, end)
        context.log.info(f"dbt {' '.join(args)} ({' '.join(f'{k}={v}' for k, v in range_env.items())})")
        with environ({**dbt_env(settings), **range_env}):
            # a failing dbt test (severity error) fails the step: nothing downstream, gold included,
            # is published
            invocation = dbt.cli(args, context=context)
            yield from invocation.stream()
        if not skip and context.selected_asset_keys == set(context.assets_def.keys):
            unit_tests_passed(target, digest)  # every model's passed: they need not run again
        # every invocation leaves a ~7 MB copy of dbt's target folder (manifest, logs, compiled
        # SQL); a daily job would pile one up per run. A failed one stays, for its logs.
        shutil.rmtree(invocation.target_path, ignore_errors=True)

    return dbt_models
