"""How the whole pipeline's cost grows with the platform: one simulator size through every stage.

    python -m benchmarks.scale_bench --size medium --days 28 [--workdir DIR] [--model-config JSON]

In a scratch folder (its own lakehouse, DuckDB file, MLflow store and DAGSTER_HOME), each stage a
child process measured for wall time and peak memory (the child and its children):

1. simulate `--days` + 1 days of the size (the landing files);
2. backfill the first `--days` days as the demo does (`daily_lakehouse_job`: ingest, dbt, gold,
   checks; range runs of `--backfill-days-per-run` days, LAKEHOUSE_BACKFILL_DAYS_PER_RUN: by
   default 7 at `medium`, 2 at `large`, one range run below; then the last day as a daily run);
3. train (`train_model_job`: the DLRM, its ablation, the factorization machine, the evaluation,
   the promotion and the two-tower retrieval model), on a share of the users at scale
   (`--model-config`, default `{"sample_fraction": 0.05}` above `small`; at `large` also without
   the co-occurrence feature, whose dense counts stop at 10,000 classes);
4. one new day through the daily chain (`daily_recommendations_job`: ingest -> dbt -> gold ->
   checks -> candidate index -> retrieve then rank -> cache), with the seconds of each step.

`--stages` runs some of them: with `--workdir`, a later stage resumes an earlier run's folder
(`--stages simulate,backfill,train`, then `--stages daily_chain` after a change to the ranking),
and the figures of the stages it does not run are those kept in the folder's scale_stages.json.

Writes benchmarks/results/scale_<size>.json and prints a table, with seconds per 1k users and per
1M events (workouts + impressions of the history). Needs the disk: about 70 MB of landing files a
day at `medium`, 340 MB at `large`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.lakehouse_bench import RESULTS, ROOT, measure

DEMO = [sys.executable, "-m", "orchestration.demo"]
STAGES = ("simulate", "backfill", "train", "daily_chain")


def dagster_job(job: str, tags: dict) -> list[str]:
    return [sys.executable, "-m", "dagster", "job", "execute", "-m", "orchestration.definitions",
            "-j", job, "--tags", json.dumps(tags)]


def step_seconds(dagster_home: str, job: str) -> dict[str, float]:
    """Seconds per step of the latest run of `job` in the instance."""
    os.environ["DAGSTER_HOME"] = dagster_home
    import dagster as dg

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=1)
    if not runs:
        return {}
    stats = instance.get_run_step_stats(runs[0].run_id)
    return {s.step_key: round((s.end_time or s.start_time) - s.start_time, 1)
            for s in stats if s.start_time is not None}


def champion(env: dict) -> bool:
    from ml import tracking

    uri = tracking.default_tracking_uri(env["LAKEHOUSE_DATA_DIR"])
    return tracking.get_alias_version("class_recommender", "champion", client_or_uri=uri) is not None


def table_rows(lake: str, layer: str, name: str) -> int:
    from lakehouse.io.delta import row_count, table_exists

    uri = f"{lake}/{layer}/{name}"
    return row_count(uri) if table_exists(uri) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="medium")
    p.add_argument("--days", type=int, default=28, help="days of history before the measured day")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--start-date", default="2026-09-01")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, removed)")
    p.add_argument("--model-config", default=None, help="JSON overrides of ModelTrainingConfig")
    p.add_argument("--retrieval-config", default=None,
                   help="JSON overrides of the two-tower's config (RetrievalTrainingConfig), e.g. "
                        "a larger sample_fraction than the ranker's")
    p.add_argument("--eval-config", default=None,
                   help="JSON overrides of the evaluation's config (default above `small`: no peers, "
                        "5%% of the users' lists, 1%% at `large`)")
    p.add_argument("--backfill-days-per-run", type=int, default=None,
                   help="days per backfill run (default: 7 at medium, 2 at large, all in one run below): "
                        "memory follows the days of a run")
    p.add_argument("--stages", default=",".join(STAGES),
                   help="stages to run (default all); a later stage alone resumes in --workdir, whose "
                        "earlier stages' figures are kept in scale_stages.json there")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    wanted = args.stages.split(",")
    if unknown := sorted(set(wanted) - set(STAGES)):
        p.error(f"--stages: unknown {unknown}; expected some of {list(STAGES)}")
    if wanted[0] != STAGES[0] and not args.workdir:
        p.error("--stages without simulate resumes an earlier run: give its --workdir")
    per_run = args.backfill_days_per_run or {"medium": 7, "large": 2}.get(args.size)
    small = args.size in ("tiny", "small")
    # `large` starts with 10,495 classes: more than the co-occurrence feature's dense counts
    # allow (ml.cooccurrence.MAX_ITEMS, 10,000); training would stop and say so
    model_config = args.model_config or (
        '{}' if small else '{"sample_fraction": 0.05}' if args.size != "large"
        else '{"sample_fraction": 0.05, "drop_features": ["recent_item_cooccurrence"]}')
    # at scale, fitting the peers (EASE, kNN, ALS) and every user's lists dominate the train stage
    # at `large` 5% of the users' lists is 10.5k lists of 8.6k classes per platform and model:
    # about 190 s each on 2 cores, half an hour of evaluation; 1% keeps about 2k lists each
    eval_config = args.eval_config or ('{}' if small else '{"peers": false, "eval_user_fraction": 0.05}'
                                       if args.size != "large" else
                                       '{"peers": false, "eval_user_fraction": 0.01}')

    work = Path(args.workdir or tempfile.mkdtemp(prefix=f"scale-{args.size}-")).absolute()
    data = work / "data"
    home = data / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    lake = str(data / "lakehouse")
    env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(data), "DAGSTER_HOME": str(home),
           "LAKEHOUSE_URI": "", "LANDING_URI": "", "LAKEHOUSE_DUCKDB_PATH": "",
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1",
           "GX_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DAGSTER_DISABLE_TELEMETRY": "true",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "LAKEHOUSE_BACKFILL_DAYS_PER_RUN": str(per_run or "")}
    start = dt.date.fromisoformat(args.start_date)
    day = start + dt.timedelta(days=args.days)  # the measured new day
    print(f"scale: size={args.size} days={args.days}+1 workdir={work}", flush=True)

    # a resumed run keeps the figures of the stages an earlier run of this folder measured
    kept = work / "scale_stages.json"
    stages: dict[str, dict] = json.loads(kept.read_text()) if kept.exists() else {}

    def run(name: str, cmd: list[str], **params: str) -> None:
        if name not in wanted:
            return
        stages[name] = {**measure(cmd, env), **params}  # a resumed run reports what this stage ran with
        kept.write_text(json.dumps(stages, indent=2))
        print(f"  {name:<14} {stages[name]['wall_s']:>9.1f}s {stages[name]['peak_rss_mib']:>9.0f} MiB", flush=True)

    run("simulate", [sys.executable, "-m", "simulator", "generate", "--size", args.size, "--seed",
                     str(args.seed), "--days", str(args.days + 1), "--start-date", start.isoformat(),
                     "--landing", f"{lake}/landing"])
    run("backfill", [*DEMO, "--start", start.isoformat(), "--days", str(args.days), "--skip-model"])
    retrieval = ["--retrieval-config", args.retrieval_config] if args.retrieval_config else []
    run("train", [*DEMO, "--model-only", "--model-config", model_config, "--eval-config", eval_config,
                  *retrieval], model_config=model_config, eval_config=eval_config,
        **({"retrieval_config": args.retrieval_config} if args.retrieval_config else {}))
    trained = stages.get("train", {})  # the champion's settings, also when an earlier run trained it
    model_config, eval_config = (trained.get("model_config", model_config),
                                 trained.get("eval_config", eval_config))
    if "daily_chain" not in wanted:
        print(f"stopped before the daily chain; resume with --stages daily_chain --workdir {work}")
        return 0
    if not champion(env):
        raise SystemExit("the promotion kept the model out (too little data to beat popularity?): "
                         "no champion, so no daily chain to measure; see the train stage's log")
    run("daily_chain", dagster_job("daily_recommendations_job",
                                   {"dagster/partition": day.isoformat(), "lakehouse/trigger": "benchmark"}))
    steps = step_seconds(str(home), "daily_recommendations_job")

    users = table_rows(lake, "bronze", "users")
    events = table_rows(lake, "bronze", "workouts") + table_rows(lake, "bronze", "impressions")
    recs = table_rows(lake, "serving", "recommendations")
    per = {name: {"s_per_1k_users": round(s["wall_s"] / max(users, 1) * 1000, 3),
                  "s_per_1m_events": round(s["wall_s"] / max(events, 1) * 1e6, 2)} for name, s in stages.items()}
    out = {"params": {"size": args.size, "days": args.days, "seed": args.seed, "model_config": model_config,
                      "eval_config": eval_config, "backfill_days_per_run": per_run,
                      "measured_day": day.isoformat()},
           "users": users, "events": events, "recommendation_rows": recs,
           "stages": stages, "per_unit": per, "daily_chain_steps": steps,
           "machine": {"cpu_count": os.cpu_count()}}
    path = Path(args.out) if args.out else RESULTS / f"scale_{args.size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))

    print(f"\n{args.size}: {users:,} users, {events:,} events (workouts + impressions), "
          f"{recs:,} recommendation rows for {day + dt.timedelta(days=1)}")
    print(f"{'stage':<14} {'wall s':>9} {'peak MiB':>9} {'s/1k users':>11} {'s/1M events':>12}")
    for name, s in stages.items():
        print(f"{name:<14} {s['wall_s']:>9.1f} {s['peak_rss_mib']:>9.0f} "
              f"{per[name]['s_per_1k_users']:>11.3f} {per[name]['s_per_1m_events']:>12.2f}")
    print("daily chain steps (s): " + ", ".join(f"{k} {v}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])))
    print(f"written {path}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
