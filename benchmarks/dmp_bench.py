"""Model-parallel training on Ray Train: 1 worker (fused, unsharded) vs 2 workers (tables
sharded table-wise with DMP, `ml.sharded`) on the same data, one epoch each.

    python -m benchmarks.dmp_bench --lakehouse data/lakehouse [--days 3] [--architecture dlrm]

Reports per run: the epoch's training samples/s (all ranks' samples over the epoch's seconds),
the wall time of `train_on_ray` (Ray start-up, validation and checkpoints included) and the
peak resident memory of each worker process. Writes benchmarks/results/dmp_<name>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run(job, encoders, workers: int, cpus_per_worker: float, storage: str) -> dict:
    from ml.ray_training import train_on_ray

    t0 = time.perf_counter()
    out = train_on_ray(job, encoders, num_workers=workers, cpus_per_worker=cpus_per_worker,
                       storage_path=storage, run_name=f"dmp-{workers}w-{int(time.time())}")
    h = out.history[-1]
    return {
        "workers": workers, "cpus_per_worker": cpus_per_worker,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "epoch_seconds": round(h["seconds"], 1), "samples": h["samples_total"],
        "samples_per_s": round(h["samples_total"] / h["seconds"]),
        "peak_rss_mb_per_worker": [round(h[f"peak_rss_mb_rank{r}"]) for r in range(workers)],
        "valid_logloss": h.get("valid_logloss"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True)
    p.add_argument("--days", type=int, default=3, help="training days (the workers split them)")
    p.add_argument("--architecture", default="dlrm", choices=["dlrm", "two_tower"])
    p.add_argument("--name", default="small")
    args = p.parse_args(argv)

    from ml.gold import GoldStore
    from ml.ray_training import init_ray
    from ml.training_job import TrainingJob, fit_encoders, plan_window

    job = TrainingJob(data=plan_window(GoldStore(args.lakehouse), train_days=args.days, valid_days=1))
    job = dataclasses.replace(
        job, train=dataclasses.replace(job.train, epochs=1),
        model=dataclasses.replace(job.model, architecture=args.architecture))
    encoders = fit_encoders(job)
    init_ray()
    runs = []
    with tempfile.TemporaryDirectory(prefix="dmp-bench-") as storage:
        for workers, cpus in ((1, 1.0), (2, 1.0), (1, 2.0)):
            runs.append(run(job, encoders, workers, cpus, storage))
            print(json.dumps(runs[-1]))
    result = {"name": args.name, "architecture": args.architecture, "days": args.days,
              "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs", "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"dmp_{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
