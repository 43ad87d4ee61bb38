"""An experiment grid: several downsampled configs trained in parallel on Ray, one MLflow parent run.

Each config is a Ray task (one CPU each by default) that trains in its own process (no Ray Train
inside: the grid itself is the parallelism), evaluates on the held-out day against popularity, and
logs a child run under the parent. The parent gets the comparison table (markdown + CSV).

    python -m ml.experiments --lakehouse data/lakehouse --data-dir data \\
        --grid '{"embedding_dim": [8, 16], "interaction": ["dot", "dcn"]}'
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time
from typing import Any

DEFAULT_GRID = {"embedding_dim": [8, 16], "interaction": ["dot", "dcn"]}
# knobs that belong to TrainConfig rather than ModelHParams
TRAIN_KEYS = {"epochs", "lr", "sparse_lr", "batch_size", "weight_decay"}


def expand(grid: dict[str, list]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _job(base, overrides: dict[str, Any]):
    model = dataclasses.replace(base.model, **{k: v for k, v in overrides.items() if k not in TRAIN_KEYS})
    train = dataclasses.replace(base.train, **{k: v for k, v in overrides.items() if k in TRAIN_KEYS})
    return dataclasses.replace(base, model=model, train=train)


def run_one(base_job, overrides: dict, tracking_cfg, parent_run_id: str, eval_fraction: float,
            threads: int) -> dict:
    """Train + evaluate + log one config (runs inside a Ray task)."""
    import torch

    from ml.evaluation import evaluate
    from ml.lists import EvalSettings
    from ml.rankers import ModelRanker, PopularityRanker
    from ml.workflow import eval_days, reference_scorer, train_and_log

    torch.set_num_threads(threads)
    job = _job(base_job, overrides)
    name = "grid-" + "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    t0 = time.perf_counter()
    trained = train_and_log(job, tracking_cfg, run_name=name, use_ray=False, register=False,
                            parent_run_id=parent_run_id, tags={"grid": json.dumps(overrides)})
    settings = EvalSettings(days=eval_days(job), user_fraction=eval_fraction, seed=job.data.seed,
                            dataset=job.dataset)
    fn = reference_scorer(trained.state_dict, trained.model_config)
    res = evaluate(job.data.gold, [ModelRanker("model", fn, trained.encoders), PopularityRanker()],
                   settings)
    metrics = {
        "map@10": res.metric("model", "map@10"), "ndcg@10": res.metric("model", "ndcg@10"),
        "recall@10": res.metric("model", "recall@10"),
        "map@10_popularity": res.metric("popularity", "map@10"),
        "valid_auc_take": trained.history[-1].get("valid_auc_take", float("nan")),
        "samples_per_s": trained.history[-1].get("samples_per_s", float("nan")),
        "seconds": time.perf_counter() - t0,
    }
    from ml import tracking

    with tracking.start_run(run_id=trained.run_id):
        tracking.log_dict_metrics({f"eval.{k}": v for k, v in metrics.items()})
    return {"config": overrides, "run_id": trained.run_id, **metrics}


def comparison(rows: list[dict]) -> str:
    keys = sorted({k for r in rows for k in r["config"]})
    cols = ["map@10", "ndcg@10", "recall@10", "map@10_popularity", "valid_auc_take",
            "samples_per_s", "seconds"]
    lines = ["| " + " | ".join([*keys, *cols, "run"]) + " |", "|" + "---|" * (len(keys) + len(cols) + 1)]
    for r in sorted(rows, key=lambda r: -r["map@10"]):
        cells = [str(r["config"][k]) for k in keys]
        cells += [f"{r[c]:.4f}" if c not in ("samples_per_s", "seconds") else f"{r[c]:.0f}" for c in cols]
        lines.append("| " + " | ".join([*cells, r["run_id"][:8]]) + " |")
    return "\n".join(lines)


def run_grid(base_job, grid: dict[str, list], tracking_cfg, *, parallel: int = 2,
             eval_fraction: float = 0.1, name: str = "grid") -> tuple[str, list[dict]]:
    """Launch every config of `grid` as a Ray task (at most `parallel` at once); returns
    (parent run id, rows)."""
    import ray

    from ml import tracking
    from ml.ray_training import init_ray

    configs = expand(grid)
    exp_id = tracking.ensure_experiment(tracking_cfg.experiment, tracking_cfg.tracking_uri,
                                        tracking_cfg.artifact_root)
    with tracking.start_run(experiment_id=exp_id, run_name=name) as parent:
        tracking.log_params({"grid": json.dumps(grid), "configs": len(configs),
                           **{k: v for k, v in base_job.params().items()
                              if k.startswith("data.") or k in ("train.epochs",)}})
        parent_id = parent.info.run_id
    init_ray()
    task = ray.remote(num_cpus=1)(run_one)
    threads = max(1, (os.cpu_count() or 2) // max(parallel, 1))
    pending, rows = [], []
    for cfg in configs:
        if len(pending) >= parallel:
            done, pending = ray.wait(pending, num_returns=1)
            rows += ray.get(done)
        pending.append(task.remote(base_job, cfg, tracking_cfg, parent_id, eval_fraction, threads))
    rows += ray.get(pending)
    table = comparison(rows)
    with tracking.start_run(run_id=parent_id):
        tracking.log_text(table, "comparison.md")
        best = max(rows, key=lambda r: r["map@10"])
        tracking.log_dict_metrics({"best.map@10": best["map@10"]})
        tracking.set_tag("best_run", best["run_id"])
    return parent_id, rows


def main(argv: list[str] | None = None) -> int:
    from ml.gold import GoldStore
    from ml.train import TrainConfig
    from ml.training_job import ModelHParams, TrainingJob, plan_window
    from ml.workflow import Tracking
    from ml import tracking

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True, help="lakehouse URI (folder or s3://...)")
    p.add_argument("--data-dir", required=True, help="data folder (MLflow store lives under it)")
    p.add_argument("--grid", default=json.dumps(DEFAULT_GRID), help="JSON: knob -> list of values")
    p.add_argument("--train-days", type=int, default=14)
    p.add_argument("--sample-fraction", type=float, default=0.25, help="share of users trained on")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="share of users evaluated")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--parallel", type=int, default=2)
    args = p.parse_args(argv)

    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking.default_tracking_uri(args.data_dir)
    tr = Tracking(tracking_uri=uri, artifact_root=None if os.environ.get("MLFLOW_TRACKING_URI")
                  else tracking.default_artifact_root(args.data_dir))
    from lakehouse.io.settings import LakehouseSettings

    so = LakehouseSettings.from_env().storage_options() if args.lakehouse.startswith("s3://") else None
    window = plan_window(GoldStore(args.lakehouse, so or None), train_days=args.train_days,
                         valid_days=1, sample_fraction=args.sample_fraction)
    base = TrainingJob(data=window, model=ModelHParams(),
                       train=TrainConfig(epochs=args.epochs, lr=2e-3, batch_size=2048,
                                         optimizer="adam", sparse_optimizer="adagrad",
                                         sparse_lr=0.05, fused=True))
    t0 = time.perf_counter()
    parent, rows = run_grid(base, json.loads(args.grid), tr, parallel=args.parallel,
                            eval_fraction=args.eval_fraction)
    print(comparison(rows))
    print(f"\n{len(rows)} runs under MLflow parent run {parent} in {time.perf_counter() - t0:.0f}s;"
          " compare them with `make mlflow`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
