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

With LAKEHOUSE_MAPPING set, the mapped dataset and its protocol. Writes
benchmarks/results/ablations.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
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


def main(argv: list[str] | None = None) -> int:
    from assets.model_config import ModelTrainingConfig
    from lakehouse.io.settings import LakehouseSettings
    from ml import tracking
    from ml.datasets import dataset_for
    from ml.gold import GoldStore, day_span
    from ml.lists import EvalSettings
    from ml.training_job import job_spec
    from ml.metrics import format_ratio
    from ml.workflow import Tracking, eval_days, evaluate_models, reference_scorer, train_and_log

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True)
    p.add_argument("--base", default="{}", help="JSON: the base config's knobs")
    p.add_argument("--variants", default=None, help="JSON: name -> knobs (default: a factorization "
                   "machine, and no recent state where the data has one)")
    p.add_argument("--exclude-days", type=int, default=None,
                   help="candidates leave out the user's takes of these last days (default: the protocol's)")
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
    job = ModelTrainingConfig(**base_knobs).job(gold, dataset=dataset, holdout_lists=protocol.holdout_lists)
    variants = default_variants(job_spec(job)) if args.variants is None else json.loads(args.variants)
    for name, knobs in variants.items():
        if set(knobs) & WINDOW_KNOBS:
            raise SystemExit(f"variant {name!r} sets {sorted(set(knobs) & WINDOW_KNOBS)}: variants "
                             "are compared on the base's window; set it in --base")
    configs = {"base": base_knobs, **{n: {**base_knobs, **v} for n, v in variants.items()}}
    store = tempfile.mkdtemp(prefix="ablations-mlflow-")  # nothing here is registered or kept
    tr = Tracking(tracking_uri=tracking.default_tracking_uri(store),
                  artifact_root=tracking.default_artifact_root(store))
    models, seconds = {}, {}
    for name, knobs in configs.items():
        j = ModelTrainingConfig(**knobs).job(gold, job.data, dataset=dataset)
        t0 = time.perf_counter()
        trained = train_and_log(j, tr, run_name=f"ablation-{name}", use_ray=False, register=False)
        seconds[name] = time.perf_counter() - t0
        models[name] = (reference_scorer(trained.state_dict, trained.model_config), trained.encoders)
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
    rows = [{"name": n, "config": configs[n], "map@10": r.metric("candidate" if n == "base" else n, "map@10"),
             "base_over": ev.comparisons.get(n), "train_seconds": round(seconds[n], 1)} for n in configs]
    pop = ev.comparisons["popularity"]
    out = {"dataset": dataset.name, "held_out": day_span(ev_settings.days), "lists": pop["lists"],
           "users": pop["users"], "base_over_popularity": pop, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"\nheld out {out['held_out']}: {pop['lists']} lists, {pop['users']} users; "
          f"base / popularity {format_ratio(pop)}")
    print("| model | MAP@10 | base / model, 95% paired bootstrap | train s |")
    print("|---|---:|---|---:|")
    for row in rows:
        ratio = "-" if row["base_over"] is None else format_ratio(row["base_over"])
        print(f"| {row['name']} {json.dumps(row['config'])} | {row['map@10']:.4f} | {ratio} | {row['train_seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
