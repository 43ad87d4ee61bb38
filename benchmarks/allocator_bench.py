"""What `ml.allocator` (polars' freed pages kept for 30 s) does to training's first epoch.

    python -m benchmarks.allocator_bench --lakehouse data/lakehouse [--paths reference fused]
        [--days 7] [--repeat 2] [--name small]

The same epoch as `make bench-train`'s in-line one (no cache: every day read, joined and encoded
in the step's thread, `benchmarks.train_bench.with_pipeline`) runs in child processes, one with
polars' default allocator settings and one with `ml.allocator`'s (jemalloc reads them once, at
polars' import: hence a process each). Each child reports the epoch's own split, timed batch by
batch: the share of its time spent stepping, and the microseconds a row spent waiting for
batches and stepping. The two settings alternate within each repetition (their order flips from
one to the next), so the paired ratio of their waits does not follow the machine's load.
Writes benchmarks/results/allocator_<name>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks.train_bench import PATHS, RESULTS, _job, with_pipeline
from ml.allocator import VAR, allocator_env

SETTINGS = ("polars default", "ml.allocator")


def child(path: str, lakehouse: str, days: int, batch_size: int) -> dict:
    """One in-line epoch of `path` in this process, under whatever allocator it was started with."""
    from ml.training_job import fit_encoders

    job = _job(lakehouse, days, *PATHS[path], batch_size)
    m = with_pipeline(job, fit_encoders(job), prefetch=0)
    rows = m["samples"]
    return {"allocator": os.environ.get(VAR, ""), "samples": rows,
            "step_share": 1.0 - m["input_wait_share"],
            "wait_us_per_row": m["input_seconds"] * 1e6 / rows,
            "step_us_per_row": (m["seconds"] - m["input_seconds"]) * 1e6 / rows}


def _run_child(setting: str, path: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != VAR}
    if setting == "ml.allocator":
        env.update(allocator_env({}))
    cmd = [sys.executable, "-m", "benchmarks.allocator_bench", "--child", path, "--lakehouse", args.lakehouse,
           "--days", str(args.days), "--batch-size", str(args.batch_size)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{path} under {setting}: the child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def _table(out: dict) -> str:
    lines = ["| path | allocator | step share | wait us/row | step us/row | wait: ml.allocator / default |",
             "|---|---|---:|---:|---:|---:|"]
    for path, runs in out["paths"].items():
        ratios = [k["wait_us_per_row"] / d["wait_us_per_row"]
                  for d, k in zip(runs["polars default"], runs["ml.allocator"])]
        for setting in SETTINGS:
            r = runs[setting]
            lines.append(f"| {path} | {setting} | {_summary([x['step_share'] for x in r])} | "
                         f"{_summary([x['wait_us_per_row'] for x in r])} | "
                         f"{_summary([x['step_us_per_row'] for x in r])} | "
                         f"{_summary(ratios) if setting == 'ml.allocator' else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True)
    p.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["reference", "fused"])
    p.add_argument("--days", type=int, default=7, help="training days of the epoch")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=2, help="runs of each setting per path")
    p.add_argument("--name", default="small")
    p.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.lakehouse, args.days, args.batch_size)))
        return 0

    out: dict = {"cpus": os.cpu_count(), "days": args.days, "batch_size": args.batch_size,
                 "repeat": args.repeat, "paths": {path: {s: [] for s in SETTINGS} for path in args.paths}}
    for rep in range(args.repeat):
        for path in args.paths:
            for setting in (SETTINGS if rep % 2 == 0 else SETTINGS[::-1]):
                r = _run_child(setting, path, args)
                out["paths"][path][setting].append(r)
                print(f"[{rep + 1}/{args.repeat}] {path}, {setting}: step share {r['step_share']:.3f}, "
                      f"wait {r['wait_us_per_row']:.2f} us/row", flush=True)
    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / f"allocator_{args.name}.json"
    dest.write_text(json.dumps(out, indent=2))
    print(f"\nthe in-line epoch (no cache) in a process per run, {args.days} days; median [range] of "
          f"{args.repeat}\n" + _table(out) + f"\n\nwrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
