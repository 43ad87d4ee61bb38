"""Retrieve then rank vs exhaustive ranking, on the same users of one day, in one run:

* a two-tower retrieval model (`ml.two_tower`) trained here on the days up to the feature date
  D (the day before the last gold day, or the `--days` last ones: nothing after D is read for
  training);
* the day's candidate index (`ml.retrieval.build_index`);
* the MLflow champion DLRM ranks every candidate (exhaustive) or each list's retrieved ones
  (the two-tower's top N, plus the platform's popular and new classes: the tower's best
  `--new-max` of those; with `--similar k`, also the k nearest neighbours of each user's recent
  items by the ranker's co-occurrence; with `--affinity a`, the tower's best `--affinity-classes`
  classes of each of the user's a strongest instructors) for N in --n and each of the others;
* quality on the lists of D + 1 (a user's takes on a platform): recall@N of the taken classes
  and of the exhaustive "For you" top 10, MAP@10 of both "For you" rows with a paired
  bootstrap interval of the ratio (users resampled);
* speed: users/s of the whole `BatchScorer` (every platform and row), same users, the median of
  `--repeat` passes.

With `--target-speedup X`, the bench names the chosen setting: the one with the most classes per
list among those at least X times faster than exhaustive ranking. The choice reads the timings
only, never the held-out lists, so its MAP@10 ratio is a fair test of the target.

With `--feature-date`, D is an earlier day: settings are chosen on the lists of a validation
day, and the default D's lists then test the choice.

With `--days K`, the lists of the K days after D are pooled (the same tower, an index per day,
as serving rebuilds the index daily and retrains the tower less often); the interval resamples
users across the days; the speed is the first day's.

Quality is measured on `--quality-users` (default: the timed `--users`; `all`: every user with a
list on D + 1), each scored once more untimed: more lists narrow the interval, the speed needs
fewer users.

    python -m benchmarks.retrieval_bench [--lakehouse data/lakehouse] [--users 2000] [--new-max 40,none]
        [--quality-users all] [--days 2] [--target-speedup 8]
        [--train-days 7 --sample-fraction 0.05 --drop-features recent_item_cooccurrence]

Writes benchmarks/results/retrieval.json and prints a table. Run `make demo` first.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def average_precision(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    hits, total = 0, 0.0
    for i, c in enumerate(ranked[:k], start=1):
        if c in relevant:
            hits += 1
            total += hits / i
    return total / min(len(relevant), k) if relevant else 0.0


def for_you_lists(rows: pl.DataFrame) -> dict[tuple[str, str], list[str]]:
    fy = rows.filter(pl.col("row_id") == "for_you").sort("user_id", "platform", "rank")
    return {(u, p): list(c) for u, p, c in
            fy.group_by("user_id", "platform", maintain_order=True).agg("class_id").iter_rows()}


def main(argv: list[str] | None = None) -> int:
    from lakehouse.io.settings import LakehouseSettings
    from ml import tracking
    from ml.gold import GoldStore
    from ml.inference import iter_user_batches, load_day, user_state
    from ml.metrics import paired_bootstrap_ratio
    from ml.pairs import PairEncoder
    from ml.retrieval import Retriever, build_index
    from ml.row_scorer import BatchScorer, row_context
    from ml.rows import InferenceSettings
    from ml.train import TrainConfig
    from ml.training_job import ModelHParams, TrainingJob, fit_encoders, plan_window, run_training
    from ml.two_tower import TowerEncoder

    settings = LakehouseSettings.from_env()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", default=settings.uri)
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI")
                   or tracking.default_tracking_uri(settings.data_dir))
    p.add_argument("--users", type=int, default=2000, help="users scored (those with lists first)")
    p.add_argument("--quality-users", default=None,
                   help="users whose lists measure quality (those with lists first; `all`: every user with "
                        "a list on D + 1); default: --users")
    p.add_argument("--n", default="50,100,200,500", help="retrieved classes per list")
    p.add_argument("--train-days", type=int, default=28)
    p.add_argument("--sample-fraction", type=float, default=1.0,
                   help="the tower trains on this share of users (whole users, as `make train`'s "
                        "sample_fraction): a `large` lakehouse's 28 days do not fit a 2-core run")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--drop-features", default="",
                   help="features the tower leaves out, comma-separated (at `large`: "
                        "recent_item_cooccurrence, whose dense counts stop at 10,000 classes)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--new-max", default=str(InferenceSettings.retrieve_new_max),
                   help="new classes per list, the tower's best (none: every new class); several, "
                        "comma-separated, are each run with every N")
    p.add_argument("--similar", default="0",
                   help="also the ranker's co-occurrence neighbours of each user's recent items, this many "
                        "per item (0: none); several, comma-separated, are each run with every N")
    p.add_argument("--affinity", default=str(InferenceSettings.retrieve_affinity),
                   help="also the tower's best --affinity-classes classes of each of the user's this many "
                        "strongest affinities (instructors; 0: none); several, comma-separated")
    p.add_argument("--affinity-classes", default=str(InferenceSettings.retrieve_affinity_classes),
                   help="classes per affinity; several, comma-separated")
    p.add_argument("--days", type=int, default=1,
                   help="held-out days, pooled: the tower is trained up to the day before the first")
    p.add_argument("--feature-date", default=None,
                   help="D, the last day the tower trains on (default: the one --days before the last gold "
                        "day); an earlier D holds out a validation day to choose settings on")
    p.add_argument("--target-speedup", type=float, default=None,
                   help="choose, by speed alone, the widest setting at least this much faster than exhaustive")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per ranking (the median is kept)")
    p.add_argument("--out", default=str(RESULTS / "retrieval.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ns = [int(x) for x in args.n.split(",")]
    drop = [f for f in args.drop_features.split(",") if f]

    mv = tracking.get_alias_version("class_recommender", "champion", client_or_uri=args.tracking_uri)
    if mv is None:
        raise SystemExit(f"no champion in {args.tracking_uri}: run `make demo` first")
    module, enc, heads = tracking.load_torchscript(mv.source, tracking_uri=args.tracking_uri)
    gold = GoldStore(args.lakehouse)
    dates = sorted(gold.scan("user_features_daily").select("feature_date").unique().collect()["feature_date"])
    if not 1 <= args.days < len(dates):
        raise SystemExit(f"--days must be 1..{len(dates) - 1} here (gold has {len(dates)} feature dates)")
    fdate = dates[-1 - args.days]  # the tower is trained up to D; the held-out days follow it
    if args.feature_date is not None:
        fdate = dt.date.fromisoformat(args.feature_date)
        if fdate not in dates[:-args.days]:
            raise SystemExit(f"--feature-date {fdate}: expected a gold feature date with {args.days} "
                             f"after it, one of {dates[0]}..{dates[-1 - args.days]}")

    t0 = time.perf_counter()
    job = TrainingJob(data=plan_window(gold, train_days=args.train_days, valid_days=0, end=fdate,
                                         sample_fraction=args.sample_fraction),
                      model=ModelHParams(architecture="two_tower",
                                         drop_features=tuple(drop)))
    job = dataclasses.replace(job, train=TrainConfig(**{**dataclasses.asdict(job.train), "epochs": args.epochs}))
    tenc = fit_encoders(job)
    trained = run_training(job, tenc, validate=False)
    train_s = time.perf_counter() - t0
    tower, tpairs = TowerEncoder(trained.state_dict, trained.model_config), PairEncoder(tenc)
    inf = InferenceSettings(users_per_batch=10**9)

    def held_out(f: dt.date) -> dict:
        """The inputs of the lists of f + 1: the day, its index, the lists' taken classes, the
        timed users (those with a list first, up to --users) and the judged ones."""
        day = load_day(gold, f, inf)
        t = time.perf_counter()
        index = build_index(tower, tpairs, day, retrieval_version=0, ranker_version=int(mv.version))
        index_s = time.perf_counter() - t
        serve = f + dt.timedelta(days=1)
        takes = gold.takes(serve, serve).select("user_id", "platform", "class_id").unique().collect()
        relevant = {(u, p): set(c) for u, p, c in takes.group_by("user_id", "platform").agg("class_id").iter_rows()}
        active = next(iter_user_batches(gold, f, inf)).with_columns(
            pl.col("user_id").is_in(takes["user_id"].unique().implode()).alias("_listed")).sort(
            "_listed", "user_id", descending=[True, False])
        n_quality = (active["_listed"].sum() if args.quality_users == "all"
                     else int(args.quality_users or args.users))
        users, taken = user_state(gold, f, active.head(max(n_quality, args.users)).drop("_listed"), inf)
        # by id: the affinity join need not keep the listed-first order
        timed, judged = (users.filter(pl.col("user_id").is_in(active.head(k)["user_id"].implode()))
                         for k in (args.users, n_quality))
        return {"fdate": f, "day": day, "index": index, "index_s": index_s, "relevant": relevant,
                "timed": timed, "judged": judged, "taken": taken}

    days = [held_out(fdate + dt.timedelta(days=k)) for k in range(args.days)]
    first = days[0]
    timed = first["timed"]

    def run(h: dict, retriever, timing: bool) -> tuple[pl.DataFrame, float | None]:
        """The rows of the day's judged users, and with `timing` the median seconds of --repeat
        timed passes over its timed users after one warm-up pass of a few users (a single pass
        moved by 1.4x between two runs on this machine)."""
        scorer = BatchScorer(module, enc, heads, h["day"], inf, int(mv.version), retriever)
        rows, secs = None, None
        if timing:
            scorer.score(h["timed"].head(100), h["taken"])
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                rows = scorer.score(h["timed"], h["taken"])
                times.append(time.perf_counter() - t)
            secs = float(np.median(times))
        if rows is None or not h["judged"]["user_id"].equals(h["timed"]["user_id"]):
            rows = scorer.score(h["judged"], h["taken"])
        return rows, secs

    # every held-out day's lists, keyed (day, user, platform); the speed is the first day's
    exh, keys, ap_exh, exh_s = {}, [], [], None
    for i, h in enumerate(days):
        rows, secs = run(h, None, timing=i == 0)
        exh_s = exh_s or secs
        lists = for_you_lists(rows)
        for k in (k for k in lists if k in h["relevant"]):
            exh[(i, *k)] = lists[k]
            keys.append((i, *k))
            ap_exh.append(average_precision(lists[k], h["relevant"][k]))
    ap_exh = np.array(ap_exh)
    day = first["day"]
    out: dict = {"feature_date": str(fdate), "held_out_days": [str(h["fdate"] + dt.timedelta(days=1)) for h in days],
                 "users": timed.height, "quality_users": sum(h["judged"].height for h in days),
                 "lists": len(keys),
                 "ranker_version": int(mv.version), "two_tower_train_seconds": round(train_s, 1),
                 "two_tower_train": {"days": args.train_days, "sample_fraction": args.sample_fraction,
                                     "epochs": args.epochs, "drop_features": drop},
                 "index_seconds": round(first["index_s"], 2),
                 "candidates": {p: f.height for p, f in day.candidates.items()},
                 "index_kind": {p: pi.kind for p, pi in first["index"].platforms.items()},
                 "exhaustive": {"seconds": round(exh_s, 2), "users_per_s": round(timed.height / exh_s, 1),
                                "map@10": float(ap_exh.mean()) if len(keys) else None},
                 "retrieve": {}}
    caps = [None if v.strip().lower() == "none" else int(v) for v in args.new_max.split(",")]
    similar = [int(v) for v in args.similar.split(",")]
    affine = [(a, m) for a in (int(v) for v in args.affinity.split(","))
              for m in ([0] if a == 0 else [int(v) for v in args.affinity_classes.split(",")])]
    for n, cap, k, (a, m) in ((n, cap, k, am) for n in ns for cap in caps for k in similar for am in affine):
        ap, rec_rel, rec_top, widths = [], [], [], []  # widths: the classes each list ranks
        for i, h in enumerate(days):
            retr = Retriever(tower, tpairs, h["index"], h["day"], n=n, popular=inf.retrieve_popular,
                             new_days=inf.retrieve_new_days, new_max=cap, similar=k,
                             neighbours=enc.neighbours, recent_items=enc.spec.recent_items,
                             affinity=a, affinity_classes=max(m, 1))
            rows, t = run(h, retr, timing=i == 0)
            secs = t if i == 0 else secs
            got = for_you_lists(rows)
            mine = [key for key in keys if key[0] == i]
            ap += [average_precision(got.get(key[1:], []), h["relevant"][key[1:]]) for key in mine]
            # recall@N: of the taken classes, and of the exhaustive top 10, in the retrieved set
            # of each list's "For you" context
            for p in sorted({key[2] for key in mine}):
                ids = [key[1] for key in mine if key[2] == p]
                ctx_users = h["judged"].filter(pl.col("user_id").is_in(ids))
                cand = retr.candidates(row_context(inf, h["day"], ctx_users, p, inf.rows[0]), p)
                widths += [cand.shape[1]] * len(cand)
                cls = h["day"].candidates[p]["class_id"].to_numpy()
                for u, row in zip(ctx_users["user_id"].to_list(), cand):
                    got_set = set(cls[row[row >= 0]].tolist())
                    rel = h["relevant"][(u, p)]
                    rec_rel.append(len(rel & got_set) / len(rel))
                    top = exh.get((i, u, p), [])
                    if top:
                        rec_top.append(len(set(top) & got_set) / len(top))
        ap = np.array(ap)
        # users resampled across the days: a user's lists on several days move together
        cmp = paired_bootstrap_ratio(ap, ap_exh, np.array([key[1] for key in keys]), n_boot=2000)
        name = "/".join([str(n)] + ([str(cap)] if len(caps) > 1 else []) + ([f"s{k}"] if len(similar) > 1 else [])
                        + ([f"a{a}x{m}"] if len(affine) > 1 else []))
        out["retrieve"][name] = {
            "n": n, "new_max": cap, "similar": k, "affinity": a, "affinity_classes": m,
            "pairs_per_list": round(float(np.mean(widths)), 1),
            "seconds": round(secs, 2), "users_per_s": round(timed.height / secs, 1),
            "speedup_vs_exhaustive": round(exh_s / secs, 2),
            "map@10": float(ap.mean()) if len(keys) else None,
            "map_ratio": cmp["ratio"], "map_ratio_low": cmp["low"], "map_ratio_high": cmp["high"],
            "recall_taken": float(np.mean(rec_rel)) if rec_rel else None,
            "recall_exhaustive_top10": float(np.mean(rec_top)) if rec_top else None,
        }
    out["new_max"] = caps
    if args.target_speedup is not None:  # by the timings alone (see the module docstring)
        fast = [(r["pairs_per_list"], name) for name, r in out["retrieve"].items()
                if r["speedup_vs_exhaustive"] >= args.target_speedup]
        out["target_speedup"], out["chosen"] = args.target_speedup, max(fast)[1] if fast else None
    out["machine"] = {"cpu_count": os.cpu_count(), "threads": args.threads, "repeat": args.repeat, "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))

    print(f"retrieve then rank vs exhaustive, tower trained up to {fdate}, {timed.height} users timed, "
          f"{len(keys)} lists of {', '.join(out['held_out_days'])} from {out['quality_users']} user-days; "
          f"candidates per platform {out['candidates']}")
    print(f"{'setting':>12} {'pairs':>6} {'users/s':>9} {'speed-up':>9} {'recall taken':>13} {'recall top10':>13} "
          f"{'MAP@10 ratio [95% CI]':>26}")
    e = out["exhaustive"]
    print(f"{'all':>12} {'':>6} {e['users_per_s']:>9.1f} {1.0:>9.2f} {1.0:>13.3f} {1.0:>13.3f} {'1':>26}")
    for n, r in out["retrieve"].items():
        ci = f"{r['map_ratio']:.3f} [{r['map_ratio_low']:.3f}, {r['map_ratio_high']:.3f}]"
        mark = "*" if out.get("chosen") == n else ""
        print(f"{mark + n:>12} {r['pairs_per_list']:>6.0f} {r['users_per_s']:>9.1f} {r['speedup_vs_exhaustive']:>9.2f} "
              f"{r['recall_taken'] or 0:>13.3f} {r['recall_exhaustive_top10'] or 0:>13.3f} {ci:>26}")
    if "chosen" in out:
        print(f"* chosen by speed alone (the widest setting >= {args.target_speedup}x): {out['chosen']}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
