"""`make demo`: the simulated days through the whole chain, as Dagster runs, then a summary.

1. every day but the last through `daily_lakehouse_job` as one backfill run (no model yet);
2. `train_model_job`: train, evaluate and promote the first champion;
3. the last day through `daily_recommendations_job`, exactly as the daily schedule runs it:
   ingest, features, checks, batch inference with the champion, cache publication;
4. a sample user's home screen per platform, read back from the published cache.

The runs go through the Dagster instance in $DAGSTER_HOME, so `make ui` shows them afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from assets.dbt import lakehouse_dbt_project, load_manifest
from lakehouse.contract import PLATFORMS
from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings, backfill_days_per_run
from lakehouse.publish import published_models
from ml.allocator import keep_freed_pages
from ml.datasets import dataset_for

JOB = "daily_lakehouse_job"
DAILY_JOB = "daily_recommendations_job"
TRAIN_JOB = "train_model_job"


def execute(tags: dict, job: str = JOB, config: dict | None = None) -> int:
    cmd = [sys.executable, "-m", "dagster", "job", "execute", "-m", "orchestration.definitions",
           "-j", job, "--tags", json.dumps({**tags, "lakehouse/trigger": "demo"})]
    if not config:
        return subprocess.call(cmd)
    import tempfile

    # `dagster job execute` takes run config as a file (JSON is YAML)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="run-config-") as f:
        f.write(json.dumps(config))
        f.flush()
        return subprocess.call(cmd + ["--config", f.name])


def run_training(model_config: dict | None = None, eval_config: dict | None = None,
                 retrieval_config: dict | None = None) -> int:
    """Train (Ray Train), evaluate against the baselines, promote: the `ml` asset group."""
    print(f"[demo] model: train, evaluate and promote as one run of {TRAIN_JOB}", flush=True)
    ops = {}
    for op, config in (("dlrm_model", model_config), ("model_evaluation", eval_config),
                       ("retrieval_model", retrieval_config)):
        if config:
            ops[op] = {"config": config}
    return execute({}, TRAIN_JOB, {"ops": ops} if ops else None)


def model_summary() -> str:
    """The evaluation table and the promotion decision of the latest training run."""
    instance = dg.DagsterInstance.get()
    lines = []
    for key in ("dlrm_model", "model_evaluation", "champion_model"):
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        if event is None or event.asset_materialization is None:
            continue
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        if key == "dlrm_model":
            lines += ["", f"Model: {meta.get('registered_model')} v{meta.get('version')}  "
                      f"MLflow run: {meta.get('mlflow_run')}"]
        elif key == "model_evaluation":
            report = str(meta.get("report", "")).split("![")[0].strip()  # text, not the plots
            lines += ["", report]
        else:
            lines += ["", f"Promotion: {'champion' if meta.get('promoted') else 'challenger'}: "
                      f"{meta.get('reason')}"]
    lines += ["", "Compare runs in MLflow:  make mlflow   (http://127.0.0.1:5000)"]
    return "\n".join(lines)


def champion_version() -> int | None:
    """The champion after the latest promotion decision (None: the gate promoted no model yet)."""
    event = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey("champion_model"))
    if event is None or event.asset_materialization is None:
        return None
    v = event.asset_materialization.metadata.get("champion_version")
    return None if v is None or v.value in (None, -1) else int(v.value)


def run_range(start: dt.date, end: dt.date) -> int:
    """A backfill: every partition of the range in one run (one Delta commit per table), or in
    runs of LAKEHOUSE_BACKFILL_DAYS_PER_RUN days, oldest first, as a backfill launched in the UI
    splits it (assets.backfill); the first failed run stops the rest."""
    per_run = backfill_days_per_run() or (end - start).days + 1
    runs = [(start + dt.timedelta(days=i), min(end, start + dt.timedelta(days=i + per_run - 1)))
            for i in range(0, (end - start).days + 1, per_run)]
    for i, (a, b) in enumerate(runs, start=1):
        which = "as one run" if len(runs) == 1 else f"run {i} of {len(runs)} ({per_run} days a run)"
        print(f"[demo] backfill: every asset for {a}..{b} {which} of {JOB}", flush=True)
        rc = execute({"dagster/asset_partition_range_start": a.isoformat(),
                      "dagster/asset_partition_range_end": b.isoformat()})
        if rc != 0:
            return rc
    return 0


def run_day(day: dt.date, job: str = DAILY_JOB) -> int:
    """One partition, exactly as the daily schedule or the landing sensor runs it."""
    print(f"[demo] daily run: partition {day} through {job}, as the schedule would run it", flush=True)
    return execute({"dagster/partition": day.isoformat()}, job)


def source_range(settings: LakehouseSettings) -> tuple[dt.date, dt.date]:
    """First and last day of a mapped source (every file read and checked; nothing written)."""
    from lakehouse.mapped.importer import import_dataset
    from lakehouse.mapped.mapping_file import load_mapping

    days = import_dataset(settings, load_mapping(settings.mapping_path), dry_run=True, log=None).days_written
    return days[0], days[-1]


def _card(item: dict) -> str:
    """A class as its card reads: title, instructor, discipline, minutes (the id where the cache
    has no title)."""
    what = " · ".join(str(item[k]) for k in ("instructor", "discipline") if item.get(k))
    minutes = f" · {item['duration_min']} min" if item.get("duration_min") else ""
    new = "  [new]" if item.get("is_new") else ""
    return f"{item.get('title') or item['class_id']:<32} {what}{minutes}  ({item['score']:.2f}){new}"


def home_screen_summary(settings: LakehouseSettings) -> str:
    """One user's home screen per platform, read back from the published cache."""
    import polars as pl

    from assets.serving import cache_dir, recommendations_uri
    from homefeed.cache import CacheReader, CacheStore

    current = CacheStore(cache_dir(settings)).current()
    if current is None:
        return "\nNo cache published."
    reader = CacheReader(cache_dir(settings), refresh_s=0)
    # a user with a screen on the first platform (bike for the simulator's data), from the rows
    # the cache was built from
    platforms = [p for p in PLATFORMS if p in current.platforms] or list(current.platforms)
    users = (pl.scan_delta(recommendations_uri(settings), storage_options=settings.storage_options() or None)
             .filter((pl.col("serve_date") == current.serve_date) & (pl.col("platform") == platforms[0]))
             .select("user_id").unique().sort("user_id").slice(7, 1).collect())
    user = users["user_id"].to_list()[:1] or None
    lines = ["", f"Cache {current.name}: {current.keys:,} user x platform keys for {current.serve_date}, "
                 f"model v{current.model_version} ({current.path})"]
    if user is None:
        return "\n".join(lines)
    for platform in platforms:
        body = reader.get(user[0], platform)
        if body is None:
            continue
        screen = json.loads(body)
        lines += ["", f"{user[0]}'s home screen on the {platform}:"]
        for row in screen["rows"]:
            lines.append(f"  {row['title']}")
            lines += [f"    {_card(i)}" for i in row["items"][:3]]
    serve = dataset_for(settings).serve_command(cache_dir(settings))
    lines += ["", f"Serve it:  {serve}   then  curl 'http://127.0.0.1:8000/users/"
              f"{user[0]}/recommendations?platform={platforms[0]}'",
              f"Review it: make preview   then  http://127.0.0.1:8001/?user={user[0]}"]
    return "\n".join(lines)


def summary(settings: LakehouseSettings) -> str:
    opts = settings.storage_options()
    lines = ["", f"Lakehouse: {settings.uri}", "", f"{'table':<34}{'rows':>12}{'version':>9}"]
    dataset = dataset_for(settings)
    published = published_models(load_manifest(lakehouse_dbt_project(dataset=dataset))).values()
    tables = [("bronze", t) for t in dataset.bronze_tables] + [(p.layer, p.model) for p in published]
    for layer, name in tables:
        uri = settings.table_uri(layer, name)
        lines.append(f"{layer + '/' + name:<34}{delta.row_count(uri, storage_options=opts):>12,}"
                     f"{str(delta.table_version(uri, opts)):>9}")
    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=DAILY_JOB), limit=1) or \
        instance.get_runs(filters=dg.RunsFilter(job_name=JOB), limit=1)
    if runs:
        run = runs[0]
        day = run.tags.get("dagster/partition", "")
        lines += ["", f"Run {run.run_id[:8]} (partition {day}): {run.status.value}", "",
                  f"{'asset check':<60}{'result':>8}"]
        for rec in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            ev = rec.dagster_event.event_specific_data
            label = f"{ev.asset_key.to_user_string()}:{ev.check_name}"
            warn = getattr(ev.severity, "value", ev.severity) == "WARN"
            lines.append(f"{label:<60}{'PASS' if ev.passed else ('WARN' if warn else 'FAIL'):>8}")
    lines += ["", f"Open the Dagster UI on the same data:  {dataset.ui_command}   (http://127.0.0.1:3000)",
              "Query a table:  .venv/bin/python -c \"import polars as pl; "
              f"print(pl.read_delta('{settings.table_uri('gold', 'user_features_daily')}').head())\""]
    return "\n".join(lines)


WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"  # the one `make ui` opens


def dagster_cli(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "dagster", *args, "-w", str(WORKSPACE)])


def start_automations(settings: LakehouseSettings) -> int:
    """Every schedule and sensor left running (the UI's Automation tab shows them on); the
    landing sensor's cursor set to the days the demo ingested and the champion sensor's to the
    current champion, so the daemon does not run them again."""
    from lakehouse.contract import ENTITIES
    from lakehouse.landing.manifest import scan_landing

    print("[demo] automations: every schedule and sensor left running", flush=True)
    rc = dagster_cli("schedule", "start", "--start-all") or dagster_cli("sensor", "start", "--start-all")
    if rc == 0 and not settings.mapping_path:
        seen = {day: st.fingerprint for day, st in scan_landing(settings.landing_uri, [e.name for e in ENTITIES]).items()}
        rc = dagster_cli("sensor", "cursor", "landing_zone_sensor", "--set",
                         json.dumps({"seen": seen, "reported": {}}, sort_keys=True))
    champion = champion_version()
    if rc == 0 and champion is not None:
        rc = dagster_cli("sensor", "cursor", "new_champion_sensor", "--set", str(champion))
    return rc


def default_start(days: int) -> dt.date:
    """The first day of a calendar of `days` days that ends yesterday (UTC)."""
    return dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=days)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--start", default=None, help="the first simulated day (default: --days days ago, "
                   "so the calendar ends yesterday)")
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--automations-on", action="store_true",
                   help="leave every schedule and sensor running afterwards (make demo AUTOMATIONS=on)")
    p.add_argument("--skip-model", action="store_true", help="only the lakehouse, no training")
    p.add_argument("--model-only", action="store_true", help="only train/evaluate/promote")
    p.add_argument("--model-config", default="", help="JSON overrides of ModelTrainingConfig")
    p.add_argument("--eval-config", default="",
                   help="JSON overrides of the evaluation's config (e.g. {\"peers\": false})")
    p.add_argument("--retrieval-config", default="",
                   help="JSON overrides of the two-tower's config (e.g. {\"sample_fraction\": 0.25})")
    p.add_argument("--from-source", action="store_true",
                   help="a mapped dataset (LAKEHOUSE_MAPPING): every day its source holds")
    args = p.parse_args(argv)
    keep_freed_pages()  # for the runs it starts, which train (`ml.allocator`)
    t0 = time.perf_counter()
    settings = LakehouseSettings.from_env()
    dataset = dataset_for(settings)
    start = dt.date.fromisoformat(args.start) if args.start else default_start(args.days)
    end = start + dt.timedelta(days=args.days - 1)
    if args.from_source:
        if not settings.mapping_path:
            p.error("--from-source needs LAKEHOUSE_MAPPING (a mapping file)")
        start, end = source_range(settings)
        args.days = (end - start).days + 1
        print(f"[demo] mapped dataset {settings.mapping_path}: {start}..{end} ({args.days} days)", flush=True)
    eval_config = {**(dataset.demo_evaluation or {}),
                   **(json.loads(args.eval_config) if args.eval_config else {})} or None
    retrieval_config = json.loads(args.retrieval_config) if args.retrieval_config else None
    if args.model_only:
        rc = run_training(json.loads(args.model_config) if args.model_config else None, eval_config,
                          retrieval_config)
        print(model_summary())
        return rc
    # Backfill all but the last day, then the last day as a daily run: the UI then shows each
    # check's result for the latest partition (a range run records one result for its window).
    rc = run_range(start, end - dt.timedelta(days=1)) if args.days > 1 else 0
    # the dataset's demo run (a mapped one, smaller than the simulator's: hold out the last 3
    # days, evaluate every user), under the caller's overrides
    model_config = {**dataset.demo_training,
                    **(json.loads(args.model_config) if args.model_config else {})} or None
    serve = not args.skip_model
    if rc == 0 and serve:
        rc = run_training(model_config, eval_config, retrieval_config)
        print(model_summary())
        if rc == 0 and champion_version() is None:
            # the gate kept the model out (see "Promotion" above): nothing to serve with, so the
            # last day runs through the lakehouse only
            print("[demo] no champion: the home screen is not built (the promotion above says why)")
            serve = False
    if rc == 0:
        rc = run_day(end, DAILY_JOB if serve else JOB)
    print(summary(settings))
    if rc == 0 and serve:
        print(home_screen_summary(settings))
    if rc == 0 and args.automations_on:
        rc = start_automations(settings)
    print(f"\n[demo] {'done' if rc == 0 else 'FAILED'} in {time.perf_counter() - t0:.0f}s"
          f" (DAGSTER_HOME={os.environ.get('DAGSTER_HOME')})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
