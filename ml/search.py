"""A hyperparameter search on Ray Tune, chosen on validation days only.

Every trial trains on the training window of the base job minus its last `validation_days` and
ranks the lists of those validation days (MAP@10, beside popularity on the same lists, with the
paired bootstrap interval). The held-out days of the base job are never looked at: they stay for
the evaluation of the model trained with the chosen config. Each trial is an MLflow child run
under one parent run, which gets the comparison table (`search.md`) and the best trial's config.

The search space is JSON, one entry per knob: `{"choice": [...]}`, `{"uniform": [lo, hi]}`,
`{"loguniform": [lo, hi]}` or `{"randint": [lo, hi]}` (Ray Tune's samplers); trials are drawn
from a seeded random search, so the same seed draws the same configs. Knobs: those of
`ModelHParams` (embedding_dim, bottom_mlp, top_mlp, interaction, dropout, ...), of `TrainConfig`
(lr, sparse_lr, epochs, batch_size, weight_decay) and `train_days` (the window trained on).

    python -m ml.search --lakehouse data/lakehouse --data-dir data --samples 8 \\
        --space '{"lr": {"loguniform": [0.0005, 0.01]}, "embedding_dim": {"choice": [8, 16, 32]}}'
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import time
from typing import Any

DEFAULT_SPACE = {
    "lr": {"loguniform": [5e-4, 1e-2]},
    "sparse_lr": {"loguniform": [0.01, 0.2]},
    "embedding_dim": {"choice": [8, 16, 32]},
    # [] : no top MLP, the heads read the pairwise dot products (a field-weighted FM)
    "top_mlp": {"choice": [[], [64, 32], [128, 64], [256, 128]]},
    "train_days": {"choice": [14, 28, 56, 112]},
    # sampled negatives per positive (at most the gold table's, dbt var negatives_per_positive)
    "negatives": {"choice": [1, 2, 4]},
}
# knobs that belong to TrainConfig, and to the data window, rather than ModelHParams
TRAIN_KEYS = {"epochs", "lr", "sparse_lr", "batch_size", "weight_decay"}
WINDOW_KEYS = {"train_days", "negatives"}
SAMPLERS = ("choice", "uniform", "loguniform", "randint")


def param_space(space: dict[str, Any]) -> dict[str, Any]:
    """The JSON space -> Ray Tune's samplers; a bad entry is an error naming the knob."""
    from ray import tune

    out = {}
    for knob, spec in space.items():
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SAMPLERS):
            raise ValueError(f"search space {knob!r}: expected one of {{{', '.join(SAMPLERS)}}} "
                             f"with its arguments, e.g. {{\"choice\": [8, 16]}}; got {spec!r}")
        (kind, args), = spec.items()
        out[knob] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
    return out


def validation_job(base_job, validation_days: int, overrides: dict[str, Any]):
    """The base job, trained on its window minus the last `validation_days` and validated on
    those (the held-out days are dropped), with the trial's `overrides` applied."""
    w = base_job.data
    valid_end = w.train_end
    valid_start = valid_end - dt.timedelta(days=validation_days - 1)
    train_end = valid_start - dt.timedelta(days=1)
    days = overrides.get("train_days")
    train_start = (max(w.train_start, train_end - dt.timedelta(days=int(days) - 1)) if days
                   else w.train_start)
    if train_end < train_start:
        raise ValueError(f"the training window {w.train_start}..{w.train_end} is too short for "
                         f"{validation_days} validation day(s) and a day to train on")
    data = dataclasses.replace(w, train_start=train_start, train_end=train_end,
                               valid_start=valid_start, valid_end=valid_end,
                               negatives=overrides.get("negatives", w.negatives))
    unknown = set(overrides) - TRAIN_KEYS - WINDOW_KEYS - {f.name for f in dataclasses.fields(base_job.model)}
    if unknown:
        raise ValueError(f"search space: unknown knob(s) {sorted(unknown)}")
    model = dataclasses.replace(base_job.model, **{k: v for k, v in overrides.items()
                                                   if k not in TRAIN_KEYS | WINDOW_KEYS})
    train = dataclasses.replace(base_job.train, **{k: v for k, v in overrides.items() if k in TRAIN_KEYS})
    return dataclasses.replace(base_job, data=data, model=model, train=train)


def run_trial(config: dict, *, base_job, tracking_cfg, parent_run_id: str, validation_days: int,
              eval_fraction: float, threads: int, protocol: dict | None = None) -> dict:
    """Train, validate and log one trial (inside a Ray Tune trial); reports its metrics."""
    import torch

    from ml import tracking
    from ml.evaluation import evaluate
    from ml.lists import EvalSettings
    from ml.rankers import ModelRanker, PopularityRanker
    from ml.workflow import eval_days, reference_scorer, train_and_log

    torch.set_num_threads(threads)
    job = validation_job(base_job, validation_days, config)
    name = "trial-" + "-".join(f"{k}={_short(v)}" for k, v in sorted(config.items()))
    t0 = time.perf_counter()
    trained = train_and_log(job, tracking_cfg, run_name=name, use_ray=False, register=False,
                            parent_run_id=parent_run_id, tags={"search": json.dumps(config)})
    settings = EvalSettings(days=eval_days(job), user_fraction=eval_fraction, seed=job.data.seed,
                            dataset=job.dataset, **(protocol or {}))
    fn = reference_scorer(trained.state_dict, trained.model_config)
    res = evaluate(job.data.gold, [ModelRanker("model", fn, trained.encoders), PopularityRanker()],
                   settings)
    vs = res.compare("model", "popularity")
    metrics = {
        "map@10": res.metric("model", "map@10"),
        "map@10_popularity": res.metric("popularity", "map@10"),
        "vs_popularity": vs["ratio"], "vs_popularity_low": vs["low"], "vs_popularity_high": vs["high"],
        "lists": vs["lists"],
        "valid_auc_take": trained.history[-1].get("valid_auc_take", float("nan")),
        "seconds": time.perf_counter() - t0,
    }
    with tracking.start_run(run_id=trained.run_id):
        tracking.log_params({"search.validation_days": f"{job.data.valid_start}..{job.data.valid_end}"})
        tracking.log_dict_metrics({f"validation.{k}": v for k, v in metrics.items()})
    out = {"run_id": trained.run_id, **metrics}
    from ray import tune

    tune.report(out)
    return out


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v).replace(" ", "")


def comparison(rows: list[dict]) -> str:
    """The trials as a markdown table, best MAP@10 first."""
    keys = sorted({k for r in rows for k in r["config"]})
    lines = ["| " + " | ".join([*keys, "MAP@10", "popularity", "vs popularity, 95% CI", "lists",
                                "s", "run"]) + " |",
             "|" + "---|" * (len(keys) + 6)]
    for r in sorted(rows, key=lambda r: -r["map@10"]):
        cells = [_short(r["config"][k]) for k in keys]
        cells += [f"{r['map@10']:.4f}", f"{r['map@10_popularity']:.4f}",
                  f"{r['vs_popularity']:.2f}x [{r['vs_popularity_low']:.2f}, {r['vs_popularity_high']:.2f}]",
                  str(int(r["lists"])), f"{r['seconds']:.0f}", r["run_id"][:8]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_search(base_job, space: dict[str, Any], tracking_cfg, *, samples: int = 8,
               validation_days: int = 3, parallel: int = 2, eval_fraction: float = 0.25,
               seed: int = 0, storage: str, name: str = "search",
               protocol: dict | None = None) -> tuple[str, list[dict], dict]:
    """`samples` trials of `space` on Ray Tune (at most `parallel` at once), chosen on the last
    `validation_days` of the base job's training window; returns (parent run id, one row per
    trial, the best trial's config). `protocol`: the data's `EvaluationProtocol.eval_settings()`
    (exclusions, list unit), as the evaluation uses it."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from ml import tracking
    from ml.ray_training import init_ray

    validation_job(base_job, validation_days, {})  # a window too short fails before any trial
    exp_id = tracking.ensure_experiment(tracking_cfg.experiment, tracking_cfg.tracking_uri,
                                        tracking_cfg.artifact_root)
    with tracking.start_run(experiment_id=exp_id, run_name=name) as parent:
        tracking.log_params({"space": json.dumps(space), "samples": samples, "seed": seed,
                             "validation_days": validation_days,
                             **{k: v for k, v in base_job.params().items() if k.startswith("data.")}})
        parent_id = parent.info.run_id
    init_ray()
    threads = max(1, (os.cpu_count() or 2) // max(parallel, 1))
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base_job=base_job, tracking_cfg=tracking_cfg,
                             parent_run_id=parent_id, validation_days=validation_days,
                             eval_fraction=eval_fraction, threads=threads, protocol=protocol),
        {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(space),
        tune_config=tune.TuneConfig(metric="map@10", mode="max", num_samples=samples,
                                    search_alg=BasicVariantGenerator(random_state=seed,
                                                                     max_concurrent=parallel)),
        run_config=tune.RunConfig(name=f"{name}-{parent_id[:8]}", storage_path=storage, verbose=0),
    )
    results = tuner.fit()
    failed = [str(r.error) for r in results if r.error]
    rows = [{"config": r.config, **r.metrics} for r in results if not r.error and r.metrics]
    if not rows:
        raise RuntimeError(f"every trial of the search failed: {failed}")
    best = max(rows, key=lambda r: r["map@10"])
    with tracking.start_run(run_id=parent_id):
        tracking.log_text(comparison(rows), "search.md")
        tracking.log_dict_metrics({"best.validation.map@10": best["map@10"],
                                   "failed_trials": float(len(failed))})
        tracking.set_tag("best_run", best["run_id"])
        tracking.set_tag("best_config", json.dumps(best["config"]))
    return parent_id, rows, best["config"]


def main(argv: list[str] | None = None) -> int:
    from lakehouse.io.settings import LakehouseSettings
    from ml import tracking
    from ml.datasets import dataset_for
    from ml.gold import GoldStore
    from ml.train import TrainConfig
    from ml.training_job import ModelHParams, TrainingJob, plan_window
    from ml.workflow import Tracking

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True, help="lakehouse URI (folder or s3://...)")
    p.add_argument("--data-dir", required=True, help="data folder (MLflow store and Tune results under it)")
    p.add_argument("--space", default=json.dumps(DEFAULT_SPACE), help="JSON: knob -> sampler")
    p.add_argument("--samples", type=int, default=8, help="trials drawn from the space")
    p.add_argument("--validation-days", type=int, default=3,
                   help="the last days of the training window the trials are compared on")
    p.add_argument("--train-days", type=int, default=365,
                   help="the longest window a trial may train on (the space's train_days picks)")
    p.add_argument("--sample-fraction", type=float, default=0.25, help="share of users trained on")
    p.add_argument("--eval-fraction", type=float, default=0.25, help="share of users validated")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking.default_tracking_uri(args.data_dir)
    tr = Tracking(tracking_uri=uri, artifact_root=None if os.environ.get("MLFLOW_TRACKING_URI")
                  else tracking.default_artifact_root(args.data_dir))
    settings = LakehouseSettings.from_env()  # LAKEHOUSE_MAPPING: a mapped dataset's protocol
    dataset = dataset_for(settings)
    so = settings.storage_options() if args.lakehouse.startswith("s3://") else None
    protocol = dataset.evaluation_protocol(settings)
    # the held-out days stay out of the search: trials validate on the end of the training window
    window = plan_window(GoldStore(args.lakehouse, so or None), train_days=args.train_days,
                         valid_days=1, valid_lists=protocol.holdout_lists,
                         sample_fraction=args.sample_fraction, seed=args.seed)
    base = TrainingJob(data=window, model=ModelHParams(include_ids=dataset.include_ids),
                       train=TrainConfig(epochs=args.epochs, lr=2e-3, batch_size=2048,
                                         optimizer="adam", sparse_optimizer="adagrad",
                                         sparse_lr=0.05, fused=True, seed=args.seed),
                       dataset=dataset)
    storage = os.path.abspath(os.path.join(args.data_dir, "ray_results"))
    t0 = time.perf_counter()
    parent, rows, best = run_search(base, json.loads(args.space), tr, samples=args.samples,
                                    validation_days=args.validation_days, parallel=args.parallel,
                                    eval_fraction=args.eval_fraction, seed=args.seed, storage=storage,
                                    protocol=protocol.eval_settings())
    print(comparison(rows))
    print(f"\n{len(rows)} trials under MLflow parent run {parent} in {time.perf_counter() - t0:.0f}s; "
          f"best on the validation days: {json.dumps(best)}. Compare them with `make mlflow`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
