"""Batch-inference throughput on the gold tables with the MLflow champion, in one run:

* naive: a per-user loop of the same model: the user's (user x candidates) frame built
  explicitly, encoded with `Encoders.transform`, scored by the TorchScript module;
* batched pairs: users encoded once per side, pairs gathered (`ml.pairs`), same module;
* factorized fp32 / bf16: `ml.factorized`, the path batch inference uses;
* the full `BatchScorer` (every platform and row, exclusions, top-K with the instructor cap).

    python -m benchmarks.inference_bench [--lakehouse data/lakehouse] [--users 256]

Scores/s are ratios against the naive loop measured in the same command (the machine is
noisy); top-10 agreement says how far each path's "For you" lists are from the naive ones.
Writes benchmarks/results/inference.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

RESULTS = Path(__file__).parent / "results"


def _top10(scores: np.ndarray) -> list[set]:
    return [set(np.argsort(-row, kind="stable")[:10].tolist()) for row in scores]


def _agreement(a: list[set], b: list[set]) -> float:
    return float(np.mean([len(x & y) / 10 for x, y in zip(a, b)]))


def main(argv: list[str] | None = None) -> int:
    from lakehouse.io.settings import LakehouseSettings
    from ml import tracking
    from ml.datasets import FITNESS
    from ml.factorized import FactorizedDLRM, factorized_score_matrix
    from ml.features import AFFINITY_COLUMN
    from ml.gold import GoldStore
    from ml.inference import iter_user_batches, load_day, user_state
    from ml.pairs import PairEncoder, score_matrix
    from ml.row_scorer import BatchScorer
    from ml.rows import InferenceSettings

    settings = LakehouseSettings.from_env()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", default=settings.uri)
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI")
                   or tracking.default_tracking_uri(settings.data_dir))
    p.add_argument("--users", type=int, default=256, help="users in the measured batch")
    p.add_argument("--naive-users", type=int, default=16, help="users the naive loop scores")
    p.add_argument("--platform", default="app")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    mv = tracking.get_alias_version("class_recommender", "champion", client_or_uri=args.tracking_uri)
    if mv is None:
        raise SystemExit(f"no champion in {args.tracking_uri}: run `make demo` or `make train` first")
    module, enc, heads = tracking.load_torchscript(mv.source, tracking_uri=args.tracking_uri)
    gold = GoldStore(args.lakehouse)
    fdate = gold.scan("user_features_daily").select(pl.col("feature_date").max()).collect().item()
    inf = InferenceSettings(users_per_batch=args.users)
    day = load_day(gold, fdate, inf)
    users, taken = user_state(gold, fdate, next(iter_user_batches(gold, fdate, inf)), inf)
    classes = day.candidates[args.platform].with_columns(pl.lit(day.serve_date).alias("event_date"))
    ctx = FITNESS.list_context(users, args.platform, day.serve_date, 18)
    C = classes.height
    results: dict[str, dict] = {}

    def record(name: str, n_pairs: int, seconds: float, scores: np.ndarray | None = None) -> None:
        results[name] = {"scores": n_pairs, "seconds": round(seconds, 3),
                         "scores_per_s": round(n_pairs / seconds)}
        if scores is not None:
            results[name]["_top10"] = _top10(scores)

    # naive per-user loop (the explicit frame, as the pyfunc model scores it)
    aff = ctx.select("user_id", pl.col(AFFINITY_COLUMN)).explode(AFFINITY_COLUMN).unnest(AFFINITY_COLUMN).select(
        "user_id", pl.col("key").alias("instructor_id"), pl.col("share_56d").alias("user_instructor_share"),
        pl.col("workouts_56d").cast(pl.Float64).alias("user_instructor_workouts"))
    n_naive = min(args.naive_users, ctx.height)
    naive = np.empty((n_naive, C), dtype=np.float32)
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(n_naive):
            row = ctx.slice(i, 1).drop("event_date", AFFINITY_COLUMN)
            frame = (row.join(classes, how="cross")
                     .join(aff, on=["user_id", "instructor_id"], how="left", maintain_order="left"))
            b = enc.transform(frame)
            naive[i] = module(b.dense, b.sparse)[:, 0].numpy()
    record("naive per-user loop", n_naive * C, time.perf_counter() - t, naive)

    pe = PairEncoder(enc)
    cside = pe.encode_classes(classes)
    t = time.perf_counter()
    uside = pe.encode_users(ctx)
    pairs = score_matrix(lambda d, s: module(d, s), pe, uside, cside)
    record("batched pairs, fp32", ctx.height * C, time.perf_counter() - t, pairs)
    for name, dtype in (("factorized, fp32", torch.float32), ("factorized, bf16", torch.bfloat16)):
        f = FactorizedDLRM(module.state_dict(), enc.spec, heads, dtype=dtype)
        t = time.perf_counter()
        uside = pe.encode_users(ctx)
        s = factorized_score_matrix(f, pe, uside, cside)
        record(name, ctx.height * C, time.perf_counter() - t, s)
    for name, prec in (("BatchScorer (all rows), fp32", "fp32"), ("BatchScorer (all rows), bf16", "bf16")):
        scorer = BatchScorer(module, enc, heads, day, InferenceSettings(precision=prec), int(mv.version))
        t = time.perf_counter()
        rows = scorer.score(users, taken)
        record(name, scorer.pairs_scored, time.perf_counter() - t)
        results[name]["rows"] = rows.height

    ref = results["naive per-user loop"]["_top10"]
    base = results["factorized, fp32"]["_top10"]
    base_rate = results["naive per-user loop"]["scores_per_s"]
    for name, r in results.items():
        r["x_naive"] = round(r["scores_per_s"] / base_rate, 1)
        if "_top10" in r:
            top = r.pop("_top10")
            r["top10_vs_naive"] = round(_agreement(top[:n_naive], ref), 4)
            r["top10_vs_fp32"] = round(_agreement(top, base), 4)
    daily = day.n_users
    out = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "processor": platform.processor(),
                    "torch": torch.__version__},
        "data": {"lakehouse": args.lakehouse, "feature_date": str(fdate), "active_users": daily,
                 "batch_users": ctx.height, "candidates": {k: v.height for k, v in day.candidates.items()},
                 "model_version": int(mv.version)},
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps(out, indent=2))
    print(f"\n{ctx.height} users x {C} {args.platform} classes (naive: {n_naive} users), "
          f"{args.threads} threads, model v{mv.version}, feature date {fdate}\n")
    print("| path | scores/s | x naive | top-10 = naive | top-10 = fp32 |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['scores_per_s']:,} | {r['x_naive']} | {r.get('top10_vs_naive', '')} | "
              f"{r.get('top10_vs_fp32', '')} |")
    print(f"\nwritten to {RESULTS / 'inference.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
