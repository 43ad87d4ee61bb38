"""What a feature or a model form adds, measured on the same held-out lists, with intervals.

The base config (`ModelTrainingConfig` knobs, as `make train MODEL_CONFIG` takes them) and each
variant (the knobs it changes, e.g. `{"drop_features": ["last_item_*"]}` to measure the recent
state, or `{"top_mlp": [], "bottom_mlp": [16]}`: the DLRM without its MLPs, a field-weighted
factorization machine) are trained on the same window with the same seed, then every one ranks
the same held-out lists beside popularity. The table gives each variant's MAP@10 and the base
over it, with the 95% paired bootstrap interval (users resampled) and the lists counted.
Settings are chosen before looking (the held-out days only measure); no run here is registered.

    python -m benchmarks.ablations --lakehouse data/lakehouse \\
        --variants '{"no_recent_state": {"drop_features": ["last_item_*"]}}'

`--end DATE`: the window's held-out days end at DATE instead of the latest day, so a setting can
be chosen on earlier days and the latest ones kept to confirm it. `--speed-users K`: each model
also ranks K active users of the first held-out day's lists against every candidate (the daily
rows, `BatchScorer`), timed in turns, the median of 3 passes: users/s and the speed-up over the
base in the same run (the cost side of a smaller model).

With LAKEHOUSE_MAPPING set, the mapped dataset and its protocol. Writes
benchmarks/results/ablations.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# the default variants: a factorization machine (the DLRM without its MLPs, `ml.workflow.FM_KNOBS`)
# and, where the data has a recent state (mapped data: last_item_*), the model without it
RECENT_STATE = {"drop_features": ["last_item_*"]}
# knobs that plan the window (a variant may not change it)
WINDOW_KNOBS = {"train_days", "valid_days", "valid_lists", "sample_fraction", "seed"}


def default_variants(spec) -> dict[str, dict]:
    """The factorization-machine form, and the model without its recent state where it has one."""
    recent = any(c.startswith("last_item_") for c in [*spec.sparse, *spec.dense])
    from ml.workflow import FM_KNOBS

    return {"fm": FM_KNOBS, **({"no_recent_state": RECENT_STATE} if recent else {})}


def scoring_speed(models: dict, gold, feature_date: dt.date, dataset, n_users: int,
                  repeat: int = 3) -> dict[str, float]:
    """name -> users/s of the daily rows (every candidate ranked, `BatchScorer`) for the first
    `n_users` active users of `feature_date`: one warm-up, then `repeat` passes taken in turns
    (the models see the same machine noise), the median kept. `models`: name -> (module,
    encoders, heads)."""
    import numpy as np

    from ml.inference import iter_user_batches, load_day, user_state
    from ml.row_scorer import BatchScorer
    from ml.rows import InferenceSettings

    inf = InferenceSettings(dataset=dataset, users_per_batch=n_users)
    day = load_day(gold, feature_date, inf)
    users, taken = user_state(gold, feature_date, next(iter_user_batches(gold, feature_date, inf)), inf)
    scorers = {n: BatchScorer(m, enc, heads, day, inf, 0) for n, (m, enc, heads) in models.items()}
    for sc in scorers.values():
        sc.score(users.head(20), taken)
    times: dict[str, list[float]] = {n: [] for n in scorers}
    for _ in range(repeat):
        for n, sc in scorers.items():
            t = time.perf_counter()
            sc.score(users, taken)
            times[n].append(time.perf_counter() - t)
    return {n: users.height / float(np.median(ts)) for n, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    from assets.model_config import ModelTrainingConfig
    from lakehouse.io.settings import LakehouseSettings
    from ml import tracking
    from ml.datasets import dataset_for
    from ml.gold import GoldStore, day_span
    from ml.lists import EvalSettings
    from ml.model import build_model
    from ml.training_job import job_spec, plan_window
    from ml.metrics import format_ratio
    from ml.workflow import Tracking, eval_days, evaluate_models, reference_scorer, train_and_log

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True)
    p.add_argument("--base", default="{}", help="JSON: the base config's knobs")
    p.add_argument("--variants", default=None, help="JSON: name -> knobs (default: a factorization "
                   "machine, and no recent state where the data has one)")
    p.add_argument("--exclude-days", type=int, default=None,
                   help="candidates leave out the user's takes of these last days (default: the protocol's)")
    p.add_argument("--end", type=dt.date.fromisoformat, default=None,
                   help="the held-out days end at this date (default: the latest day)")
    p.add_argument("--speed-users", type=int, default=0,
                   help="time each model's daily rows for this many users (0: quality only)")
    p.add_argument("--out", default=str(RESULTS / "ablations.json"), help="the JSON written")
    p.add_argument("--eval-fraction", type=float, default=None,
                   help="share of users evaluated (default: the demo's for the dataset)")
    args = p.parse_args(argv)

    settings = LakehouseSettings.from_env()
    dataset = dataset_for(settings)
    protocol = dataset.evaluation_protocol(settings)
    gold = GoldStore(args.lakehouse, settings.storage_options() if args.lakehouse.startswith("s3://") else None)
    base_knobs = {**dataset.demo_training, **json.loads(args.base)}
    # the window is planned once, from the base: every variant trains and is judged on it
    base_cfg = ModelTrainingConfig(**base_knobs)
    window = None if args.end is None else plan_window(
        gold, train_days=base_cfg.train_days, valid_days=base_cfg.valid_days, end=args.end,
        valid_lists=base_cfg.valid_lists if base_cfg.valid_lists is not None else protocol.holdout_lists,
        sample_fraction=base_cfg.sample_fraction, seed=base_cfg.seed)
    job = base_cfg.job(gold, window, dataset=dataset, holdout_lists=protocol.holdout_lists)
    variants = default_variants(job_spec(job)) if args.variants is None else json.loads(args.variants)
    for name, knobs in variants.items():
        if set(knobs) & WINDOW_KNOBS:
            raise SystemExit(f"variant {name!r} sets {sorted(set(knobs) & WINDOW_KNOBS)}: variants "
                             "are compared on the base's window; set it in --base")
    configs = {"base": base_knobs, **{n: {**base_knobs, **v} for n, v in variants.items()}}
    store = tempfile.mkdtemp(prefix="ablations-mlflow-")  # nothing here is registered or kept
    tr = Tracking(tracking_uri=tracking.default_tracking_uri(store),
                  artifact_root=tracking.default_artifact_root(store))
    models, seconds, modules = {}, {}, {}
    for name, knobs in configs.items():
        j = ModelTrainingConfig(**knobs).job(gold, job.data, dataset=dataset)
        t0 = time.perf_counter()
        trained = train_and_log(j, tr, run_name=f"ablation-{name}", use_ray=False, register=False)
        seconds[name] = time.perf_counter() - t0
        models[name] = (reference_scorer(trained.state_dict, trained.model_config), trained.encoders)
        if args.speed_users:
            module = build_model(trained.model_config, "reference")
            module.load_state_dict(trained.state_dict)
            modules[name] = (module.eval(), trained.encoders, trained.model_config.heads)
        print(f"trained {name} in {seconds[name]:.0f}s", flush=True)
    fraction = args.eval_fraction if args.eval_fraction is not None else \
        (dataset.demo_evaluation or {}).get("eval_user_fraction", 0.25)
    fields = protocol.eval_settings()
    if args.exclude_days is not None:
        fields["exclude_days"] = args.exclude_days
    ev_settings = EvalSettings(days=eval_days(job), user_fraction=fraction, seed=job.data.seed,
                               dataset=dataset, **fields)
    ev = evaluate_models(gold, {"candidate" if n == "base" else n: m for n, m in models.items()},
                         ev_settings, out_dir=tempfile.mkdtemp(prefix="ablations-"))
    r = ev.result
    speed = (scoring_speed(modules, gold, ev_settings.days[0] - dt.timedelta(days=1), dataset, args.speed_users)
             if args.speed_users else {})
    rows = [{"name": n, "config": configs[n], "map@10": r.metric("candidate" if n == "base" else n, "map@10"),
             "base_over": ev.comparisons.get(n), "train_seconds": round(seconds[n], 1),
             "features": {"dense": len(models[n][1].spec.dense), "sparse": len(models[n][1].spec.sparse)},
             **({"users_per_s": round(speed[n], 1), "speedup": round(speed[n] / speed["base"], 3)}
                if speed else {})}
            for n in configs]
    pop = ev.comparisons["popularity"]
    out = {"dataset": dataset.name, "held_out": day_span(ev_settings.days),
           "trained_on": day_span(job.data.train_days()), "lists": pop["lists"],
           **({"speed_users": args.speed_users} if speed else {}),
           "users": pop["users"], "base_over_popularity": pop, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"\nheld out {out['held_out']}: {pop['lists']} lists, {pop['users']} users; "
          f"base / popularity {format_ratio(pop)}")
    timed = " users/s | speed-up |" if speed else ""
    print(f"| model | MAP@10 | base / model, 95% paired bootstrap | train s |{timed}")
    print("|---|---:|---|---:|" + ("---:|---:|" if speed else ""))
    for row in rows:
        ratio = "-" if row["base_over"] is None else format_ratio(row["base_over"])
        cost = f" {row['users_per_s']:.1f} | {row['speedup']:.2f}x |" if speed else ""
        print(f"| {row['name']} {json.dumps(row['config'])} | {row['map@10']:.4f} | {ratio} | "
              f"{row['train_seconds']:.0f} |{cost}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
