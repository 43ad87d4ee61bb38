"""Training with its input pipeline against the step alone, paired day by day: issue 17's ratio
with an interval.

    python -m benchmarks.paired_pipeline --lakehouse data/lakehouse [--days 7] [--batch-size 2048]
        [--paths reference ebc fused] [--name small]

A default training run (`TrainConfig`'s defaults: 2 epochs, the days the first epoch encodes
kept for the second, the pipeline in the step's thread on a CPU) in which every day of every
epoch is trained twice, back to back, in an order that alternates from day to day:
- **with the pipeline**: the day's batches as training reads them (`ml.training_job.train_batches`,
  over the window's examples opened once, as `run_training` does). In the first epoch that reads,
  joins and encodes the day; in the second it takes the day from the cache;
- **the step alone**: the same day's batches, prepared before the timed run.

Both legs train on the same rows, so the ratio of their seconds is the ratio of their rates. The
two legs of a day run within about a second of each other, so the machine's load moves both
alike; the ratio over an epoch comes with a paired bootstrap 95% interval over its days
(`ml.metrics.paired_bootstrap_ratio`; the default run's two epochs resample whole days). A leg
with the pipeline also times its own split (its share of seconds spent stepping, as
`make bench-train`'s "its step share"), which ignores what the pipeline does to the step.
Writes benchmarks/results/pipeline_<name>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

import torch

from benchmarks.train_bench import PATHS, RESULTS, default_job


def paired_days(job, encoders) -> dict:
    """One default training run of `job` (its `train` config's epochs, cache and loading), each
    day of each epoch trained with the pipeline and from batches prepared beforehand. Returns the
    legs (epoch, day, samples, seconds of each, the pipeline leg's input seconds) and the ratios:
    `first_epoch`, `cached_epochs` (the epochs after it) and `run` (all), each
    step-only seconds / with-pipeline seconds with its interval, and `step_share` per epoch."""
    from ml.examples import ChunkCache
    from ml.metrics import paired_bootstrap_ratio
    from ml.model import build_model
    from ml.optim import setup_training
    from ml.train import seed_everything, train_epoch
    from ml.training_job import _training_examples, model_config, train_batches

    cfg = job.train
    examples = _training_examples(job, encoders.spec)[0]  # opened once, as run_training does
    cache = ChunkCache(cfg.cache_mb << 20) if cfg.cache_mb else None

    def day_batches(day, epoch, cache):
        one = replace(job, data=replace(job.data, train_start=day, train_end=day))
        return train_batches(one, encoders, epoch=epoch, cache=cache, examples=examples)

    # the days in date order: each is timed on its own, so the order of the days does not matter
    days = job.data.train_days()
    prepared = {(e, d): list(day_batches(d, e, None)) for e in range(cfg.epochs) for d in days}

    seed_everything(cfg.seed)
    model, optimizer = setup_training(build_model(model_config(job, encoders), job.backend), cfg)
    train_epoch(model, prepared[0, days[0]][:3], optimizer, cfg)  # warm-up
    legs = []
    for epoch in range(cfg.epochs):
        for i, day in enumerate(days):
            runs = {"pipeline": lambda: day_batches(day, epoch, cache), "step": lambda: prepared[epoch, day]}
            names = ["pipeline", "step"] if (i + epoch) % 2 == 0 else ["step", "pipeline"]
            leg = {"epoch": epoch, "day": str(day), "first": names[0]}
            for name in names:
                m = train_epoch(model, runs[name](), optimizer, cfg, epoch=epoch)
                leg[f"{name}_samples"], leg[f"{name}_seconds"] = int(m["samples"]), m["seconds"]
                if name == "pipeline":
                    leg["pipeline_input_seconds"] = m["input_seconds"]
            legs.append(leg)

    def ratio(rows: list[dict]) -> dict:
        if not rows:
            return {}
        out = paired_bootstrap_ratio([r["step_seconds"] for r in rows], [r["pipeline_seconds"] for r in rows],
                                     groups=[r["day"] for r in rows])
        out["step_share"] = 1 - sum(r["pipeline_input_seconds"] for r in rows) / sum(
            r["pipeline_seconds"] for r in rows)
        return out

    return {"days": len(days), "epochs": cfg.epochs, "batch_size": cfg.batch_size, "legs": legs,
            "first_epoch": ratio([r for r in legs if r["epoch"] == 0]),
            "cached_epochs": ratio([r for r in legs if r["epoch"] > 0]),
            "run": ratio(legs)}


def _cell(r: dict) -> str:
    if not r:  # a run of one epoch has no later epochs
        return "- | -"
    return f"{r['ratio']:.2f} [{r['low']:.2f}, {r['high']:.2f}] | {r['step_share']:.2f}"


def table(results: dict) -> str:
    lines = ["with the pipeline / the step alone, paired day by day: ratio [95% interval, days "
             "resampled] | the pipeline legs' own step share",
             "| path | days | first epoch (reads, joins, encodes) | its step share | later epochs (cache) "
             "| its step share | default run, all epochs | its step share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for path, r in results.items():
        lines.append(f"| {path} | {r['days']} | {_cell(r['first_epoch'])} | {_cell(r['cached_epochs'])} "
                     f"| {_cell(r['run'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ml.allocator import keep_freed_pages

    keep_freed_pages()  # as training runs (`ml.allocator`); before anything imports polars
    from ml.training_job import fit_encoders

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True)
    p.add_argument("--days", type=int, default=7, help="training days (the last before the held-out day)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the training job's")
    p.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["reference", "ebc", "fused"])
    p.add_argument("--name", default="small")
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)

    results: dict = {}
    encoders = None
    for path in args.paths:
        backend, fused = PATHS[path]
        job = default_job(args.lakehouse, args.days, backend, fused, args.batch_size)
        encoders = encoders or fit_encoders(job)  # one fit: every path sees the same features
        results[path] = paired_days(job, encoders)
        first = results[path]["first_epoch"]
        print(f"{path}: first epoch {first['ratio']:.2f} [{first['low']:.2f}, {first['high']:.2f}]", flush=True)
    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / f"pipeline_{args.name}.json"
    dest.write_text(json.dumps({"cpus": os.cpu_count(), "paths": results}, indent=2))
    print("\n" + table(results) + f"\n\nwrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
