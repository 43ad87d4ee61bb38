"""Whether the shared user embeddings help the DLRM: measured without leakage, on the same lists.

1. The base config's window is planned as `make ablations` plans it (training days, then the
   held-out days).
2. A two-tower (the retrieval model's defaults, or --tower-knobs such as user id embeddings) is
   trained on the --tower-days event days *before* the DLRM's first training day: no vector has
   seen a day the DLRM trains on or is judged on (a tower trained on the DLRM's own days would
   hand it vectors fitted to its labels).
3. Its user vectors of every feature date from the day before the DLRM's first training day to
   the day before the last held-out one, as the `user_embeddings` table publishes them
   (`ml.retrieval.user_embeddings`: one per platform the user has, under its "For you" context),
   averaged over the user's platforms, become the columns user_emb_00.. of a copy of gold
   user_features_daily in a scratch lakehouse (the other tables are linked, not copied).
4. `benchmarks.ablations` trains the base config and the base with
   `add_features: ["user_emb_*"]` on that lakehouse and ranks the same held-out lists: MAP@10 of
   each, base / variant with its 95% paired bootstrap interval (a ratio under 1: the embeddings
   help).

    python -m benchmarks.user_embedding_bench --lakehouse data/lakehouse

Writes benchmarks/results/user_embeddings.json (the ablation's JSON plus the tower's window) and
prints the table. Nothing is registered and the lakehouse is not written.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

RESULTS = Path(__file__).parent / "results"
PREFIX = "user_emb_"


def embedding_frame(rows: pl.DataFrame, dim: int) -> pl.DataFrame:
    """(feature_date, user_id, user_emb_00..) from `user_embeddings` rows: each user's vectors
    averaged over their platforms."""
    vec = rows["embedding"].explode().to_numpy().reshape(-1, dim)
    cols = [f"{PREFIX}{i:02d}" for i in range(dim)]
    wide = pl.concat([rows.select("feature_date", "user_id"),
                      pl.DataFrame(vec.astype(np.float32), schema=cols)], how="horizontal")
    return wide.group_by("feature_date", "user_id").agg(pl.col(cols).mean())


def scratch_lakehouse(src: str, dst: Path, embeddings: pl.DataFrame) -> str:
    """`dst`: links to `src`'s layers and gold tables, and its own user_features_daily (the
    source's rows with the embedding columns, null where a user-day has none)."""
    src_root = Path(src)
    dst.mkdir(parents=True)
    for layer in src_root.iterdir():
        if layer.name != "gold":
            (dst / layer.name).symlink_to(layer.resolve(), target_is_directory=True)
    (dst / "gold").mkdir()
    for table in (src_root / "gold").iterdir():
        if table.name != "user_features_daily":
            (dst / "gold" / table.name).symlink_to(table.resolve(), target_is_directory=True)
    users = pl.scan_delta(str(src_root / "gold" / "user_features_daily")).collect()
    users.join(embeddings, on=["feature_date", "user_id"], how="left").write_delta(
        str(dst / "gold" / "user_features_daily"))
    return str(dst)


def main(argv: list[str] | None = None) -> int:
    from assets.model_config import ModelTrainingConfig
    from benchmarks import ablations
    from lakehouse.io.settings import LakehouseSettings
    from ml.datasets import dataset_for
    from ml.gold import GoldStore, day_span
    from ml.inference import load_day
    from ml.pairs import PairEncoder
    from ml.retrieval import user_embeddings
    from ml.rows import InferenceSettings
    from ml.training_job import ModelHParams, TrainingJob, fit_encoders, plan_window, run_training
    from ml.two_tower import TowerEncoder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True, help="a local lakehouse folder (read only)")
    p.add_argument("--base", default="{}", help="JSON: the DLRM's knobs (as `make train MODEL_CONFIG`)")
    p.add_argument("--tower-days", type=int, default=28, help="event days the tower trains on")
    p.add_argument("--tower-epochs", type=int, default=2)
    p.add_argument("--tower-knobs", default="{}",
                   help='JSON: the tower\'s ModelHParams beside the defaults, e.g. {"include_ids": true}')
    p.add_argument("--eval-fraction", default="1.0", help="share of users evaluated")
    p.add_argument("--exclude-days", default=None, help="as `benchmarks.ablations`")
    p.add_argument("--out", default=str(RESULTS / "user_embeddings.json"))
    args = p.parse_args(argv)

    if "://" in args.lakehouse:
        raise SystemExit(f"--lakehouse {args.lakehouse}: a local folder (the scratch copy links its tables)")
    tower_knobs = json.loads(args.tower_knobs)
    settings = LakehouseSettings.from_env()
    dataset = dataset_for(settings)
    gold = GoldStore(args.lakehouse)
    protocol = dataset.evaluation_protocol(settings)
    base_knobs = {**dataset.demo_training, **json.loads(args.base)}
    window = ModelTrainingConfig(**base_knobs).job(gold, dataset=dataset,
                                                   holdout_lists=protocol.holdout_lists).data
    tower_end = window.train_start - dt.timedelta(days=1)
    if not any(d <= tower_end for d in gold.event_dates()):
        raise SystemExit(f"no event day before the DLRM's first training day {window.train_start}: "
                         "nothing to train the tower on without leakage (fewer train_days in --base)")

    t0 = time.perf_counter()
    job = TrainingJob(data=plan_window(gold, train_days=args.tower_days, valid_days=0, end=tower_end),
                      model=ModelHParams(**{**tower_knobs, "architecture": "two_tower"}), dataset=dataset)
    job = dataclasses.replace(job, train=dataclasses.replace(job.train, epochs=args.tower_epochs))
    enc = fit_encoders(job)
    trained = run_training(job, enc, validate=False)
    tower, pairs = TowerEncoder(trained.state_dict, trained.model_config), PairEncoder(enc)
    tower_s = time.perf_counter() - t0
    print(f"tower trained on {day_span(job.data.train_days())} in {tower_s:.0f}s",
          flush=True)

    inf = InferenceSettings(dataset=dataset)
    first, last = window.train_start - dt.timedelta(days=1), window.valid_end - dt.timedelta(days=1)
    frames = []
    for k in range((last - first).days + 1):
        day = load_day(gold, first + dt.timedelta(days=k), inf)
        rows = pl.concat(list(user_embeddings(gold, day, tower, pairs, inf, model_version=0)))
        frames.append(embedding_frame(rows, tower.dim))
    embeddings = pl.concat(frames)
    print(f"{embeddings.height} user-days of {tower.dim}-d vectors, feature dates {first}..{last}", flush=True)

    with tempfile.TemporaryDirectory(prefix="user-embeddings-") as scratch:
        lake = scratch_lakehouse(args.lakehouse, Path(scratch) / "lakehouse", embeddings)
        out = Path(args.out)
        argv2 = ["--lakehouse", lake, "--base", json.dumps(base_knobs), "--eval-fraction", args.eval_fraction,
                 "--out", str(out), "--variants",
                 json.dumps({"user_embeddings": {"add_features": [f"{PREFIX}*"]}})]
        if args.exclude_days is not None:
            argv2 += ["--exclude-days", args.exclude_days]
        ablations.main(argv2)
    got = json.loads(out.read_text())
    got["tower"] = {"train_start": job.data.train_start.isoformat(), "train_end": job.data.train_end.isoformat(),
                    "epochs": args.tower_epochs, "knobs": tower_knobs, "dim": tower.dim, "train_seconds": round(tower_s, 1),
                    "user_days": embeddings.height, "feature_dates": [first.isoformat(), last.isoformat()]}
    got["dlrm_window"] = {"train_start": window.train_start.isoformat(), "train_end": window.train_end.isoformat()}
    out.write_text(json.dumps(got, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
