"""Lakehouse benchmark: wall time and peak memory of each stage, growth 30 -> 60 days, and the
cost of a daily increment against a full rebuild, all measured in one command.

    python -m benchmarks.lakehouse_bench --size small          # (make bench)

With `--processes stage` (the default) every stage runs in its own child process so its peak
RSS (children included: dbt runs as a grandchild) is its own, and each pays its own start and
imports. With `--processes run` each run's stages run in one child, one after the other, as the
daily jobs run them (`in_process_executor`): fixed costs are paid once a run, the peak is the
run's. Results: JSON under benchmarks/results/ and a table on stdout. The machine is noisy;
compare the ratios printed here, which come from one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# as the job's steps: ingest (with the bronze audit), dbt build (with its tests), publish
# (the gold audit, then the commit)
STAGES = ("ingest", "dbt_build", "publish")


# ----------------------------------------------------------------------------- child side

def _settings(lake: str, data: str):
    from lakehouse.io.settings import LakehouseSettings

    return LakehouseSettings.build(uri=lake, landing_uri=os.environ["BENCH_LANDING"],
                                   duckdb_path=str(Path(data) / "warehouse.duckdb"), data_dir=data)


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def run_stage(stage: str, lake: str, data: str, start: dt.date, end: dt.date) -> dict:
    settings = _settings(lake, data)
    info: dict = {}
    if stage == "ingest":
        from lakehouse.landing.ingest import ingest_days

        report = ingest_days(settings, _days(start, end))
        info["rows"] = sum(r.rows_valid for r in report.entities.values())
        info["quarantined"] = report.rows_quarantined
    elif stage == "dbt_build":
        from lakehouse.dbt_invocation import (DBT_PROJECT_DIR, code_digest, dbt_env, dbt_executable, run_env,
                                              unit_test_args, unit_tests_passed)

        # as the dbt asset runs it: the range in the environment, so a run on the same target
        # folder parses only what changed, and the unit tests run until they passed on this code
        # (this process never imports Dagster: a Dagster step has it loaded already, and the
        # stage is dbt's work)
        env = {**os.environ, **dbt_env(settings), **run_env(start, end)}
        target = Path(data) / "dbt_target"
        digest = code_digest(DBT_PROJECT_DIR, {})  # the project's default vars: the simulator's data
        skip = unit_test_args(target, digest)
        cmd = [dbt_executable(), "build", "--quiet", "--target", "local", "--target-path", str(target),
               "--log-path", str(Path(data) / "dbt_logs"), *skip]
        subprocess.run(cmd, cwd=DBT_PROJECT_DIR, env=env, check=True)
        if not skip:
            unit_tests_passed(target, digest)
    elif stage == "publish":
        # the job's publish step: stage each mart's days and audit them (its gold suite and
        # no_shrink, in memory: lakehouse.quality.gates.stage_and_audit), then commit
        from lakehouse.dbt_invocation import project_var
        from lakehouse.publish import commit, published_models
        from lakehouse.quality.checks import blocking_failures
        from lakehouse.quality.gates import gold_suites, stage_and_audit

        manifest = json.loads((Path(data) / "dbt_target" / "manifest.json").read_text())
        specs = {p.model: p for p in published_models(manifest).values() if p.partition_by}
        suites = {s.table: s for s in gold_suites({m: p.partition_by for m, p in specs.items()},
                                                  project_var("negatives_per_positive", 4))}
        t0 = time.perf_counter()
        staged, outcomes = stage_and_audit(settings, specs, suites, start=start, end=end)
        info["stage_audit_s"] = round(time.perf_counter() - t0, 2)
        failures = [f"{m}:{o.name}" for m, outs in outcomes.items() for o in blocking_failures(outs)]
        if failures:
            raise SystemExit(f"the gold audit failed, nothing committed: {failures}")
        info["rows"] = sum(commit(settings, specs[m], rows, start=start, end=end).rows for m, rows in staged.items())
    elif stage == "run":  # every stage in this one process, in order, as a daily job
        for name in STAGES:
            t0 = time.perf_counter()
            info[name] = run_stage(name, lake, data, start, end)
            info[name]["wall_s"] = round(time.perf_counter() - t0, 2)
    else:
        raise SystemExit(f"unknown stage {stage!r}; expected one of {STAGES} or run")
    return info


# ----------------------------------------------------------------------------- parent side

def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run a child; return wall seconds, peak RSS (MiB, the child and its waited-for children)
    and what the child printed as its last JSON line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"benchmark step failed ({code}): {' '.join(cmd)}")
    info = {}
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            info = json.loads(line)
            break
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), **info}


def stage_cmd(stage, lake, data, start, end) -> list[str]:
    return [sys.executable, "-m", "benchmarks.lakehouse_bench", "stage", stage, "--lake", lake,
            "--data", data, "--start", start.isoformat(), "--end", end.isoformat()]


def build(label: str, lake: str, data: str, start: dt.date, end: dt.date, env: dict,
          fresh: bool, processes: str = "stage") -> dict:
    if fresh:
        shutil.rmtree(lake, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    Path(data).mkdir(parents=True, exist_ok=True)
    if processes == "run":
        child = measure(stage_cmd("run", lake, data, start, end), env)
        stages = {name: {**child[name], "peak_rss_mib": child["peak_rss_mib"]} for name in STAGES}
        # the child's start and imports before its first stage count in the run's total
        total = child["wall_s"]
    else:
        stages = {stage: measure(stage_cmd(stage, lake, data, start, end), env) for stage in STAGES}
        total = round(sum(s["wall_s"] for s in stages.values()), 2)
    for stage in STAGES:
        print(f"  {label:<22} {stage:<10} {stages[stage]['wall_s']:>8.1f}s "
              f"{stages[stage]['peak_rss_mib']:>8.0f} MiB", flush=True)
    return {"label": label, "start": start.isoformat(), "end": end.isoformat(), "stages": stages,
            "total_wall_s": total, "peak_rss_mib": max(s["peak_rss_mib"] for s in stages.values())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd")
    st = sub.add_parser("stage")
    st.add_argument("stage", choices=(*STAGES, "run"))
    st.add_argument("--lake", required=True)
    st.add_argument("--data", required=True)
    st.add_argument("--start", required=True)
    st.add_argument("--end", required=True)
    p.add_argument("--size", default="small")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--start-date", default="2026-09-01")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, removed)")
    p.add_argument("--processes", choices=("stage", "run"), default="stage",
                   help="a child process per stage (its own peak), or per run (as the daily jobs)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    if args.cmd == "stage":
        info = run_stage(args.stage, args.lake, args.data, dt.date.fromisoformat(args.start),
                         dt.date.fromisoformat(args.end))
        print(json.dumps(info))
        return 0

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lakehouse-bench-"))
    landing = work / "landing"
    first = dt.date.fromisoformat(args.start_date)
    n = args.days
    half = max(1, n // 2)
    env = {**os.environ, "BENCH_LANDING": str(landing), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "GX_ANALYTICS_ENABLED": "false"}
    print(f"benchmark: size={args.size} seed={args.seed} days={n}+1 workdir={work}", flush=True)

    # The landing zone holds n+1 days; each scenario ingests the days it needs from it.
    simulate = measure([sys.executable, "-m", "simulator", "generate", "--size", args.size,
                        "--seed", str(args.seed), "--days", str(n + 1), "--start-date",
                        args.start_date, "--landing", str(landing)], env)
    print(f"  {'simulate':<22} {n + 1} days  {simulate['wall_s']:>8.1f}s {simulate['peak_rss_mib']:>8.0f} MiB")

    last = first + dt.timedelta(days=n - 1)
    extra = last + dt.timedelta(days=1)
    pr = args.processes
    runs = {
        f"full_{half}d": build(f"full {half} days", str(work / "lake_half"), str(work / "data_half"),
                               first, first + dt.timedelta(days=half - 1), env, fresh=True, processes=pr),
        f"full_{n}d": build(f"full {n} days", str(work / "lake"), str(work / "data"), first, last, env,
                            fresh=True, processes=pr),
    }
    runs["increment_1d"] = build(f"+1 day on top of {n}", str(work / "lake"), str(work / "data"),
                                 extra, extra, env, fresh=False, processes=pr)
    runs[f"full_{n + 1}d"] = build(f"full {n + 1} days", str(work / "lake_full"), str(work / "data_full"),
                                   first, extra, env, fresh=True, processes=pr)

    full, inc, halfrun = runs[f"full_{n + 1}d"], runs["increment_1d"], runs[f"full_{half}d"]
    ratios = {
        "increment_over_full_rebuild": round(inc["total_wall_s"] / full["total_wall_s"], 3),
        f"full_{n}d_over_full_{half}d": round(runs[f"full_{n}d"]["total_wall_s"] / halfrun["total_wall_s"], 3),
        **{f"increment_over_full_{s}": round(inc["stages"][s]["wall_s"] / full["stages"][s]["wall_s"], 3)
           for s in STAGES},
    }
    result = {
        "benchmark": "lakehouse",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "params": {"size": args.size, "seed": args.seed, "days": n, "processes": pr},
        "simulate": simulate,
        "runs": runs,
        "ratios": ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / f"lakehouse_{args.size}.json"
    out.write_text(json.dumps(result, indent=2))

    print("\n| run | " + " | ".join(STAGES) + " | total s | peak MiB |")
    print("|---|" + "---:|" * (len(STAGES) + 2))
    for r in runs.values():
        print(f"| {r['label']} | " + " | ".join(f"{r['stages'][s]['wall_s']:.1f}" for s in STAGES)
              + f" | {r['total_wall_s']:.1f} | {r['peak_rss_mib']:.0f} |")
    print(f"\nsimulate {n + 1} days: {simulate['wall_s']:.1f}s, peak {simulate['peak_rss_mib']:.0f} MiB")
    for k, v in ratios.items():
        print(f"{k}: {v}")
    print(f"\nwritten: {out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
