"""The big-table training benchmark: where model parallelism pays.

The demo's metadata tables hold tens of rows; a platform's id tables hold millions. This adds
hashed `user_id` and `class_id` features of 1M rows each (dim 64, as every table of the model) to
the real examples of the training window, and trains the same DLRM, on the same batches, three
ways:

* TorchRec fused sharded: `ml.optim.prepare_fused` (DistributedModelParallel, world size 1,
  table-wise, the fused FBGEMM CPU kernel: Adagrad on the rows a batch touched, in backward);
* the plain-PyTorch reference with dense gradients (`nn.EmbeddingBag`, Adagrad on every row of
  every table each step: the demo's `sparse_optimizer`);
* the plain-PyTorch reference with `sparse=True` bags and `torch.optim.SparseAdam`.

Each runs in its own process, so its peak memory (`ru_maxrss`) is its own, and the three run in
rounds whose order reverses from one to the next (a ratio pairs the runs of one round). Called by
`benchmarks.train_bench` (`--big-tables`); a variant alone:
`python -m benchmarks.big_tables --batches FILE --variant fused`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = {
    "fused": "torchrec fused sharded (DMP, FBGEMM Adagrad)",
    "dense": "reference, dense gradients (Adagrad)",
    "sparse_adam": "reference, sparse gradients (SparseAdam)",
}
ID_COLUMNS = ("user_id", "class_id")


def big_batches(job, encoders, *, rows: int, buckets: int, days: int = 3) -> dict:
    """The window's last `days` of examples encoded as training encodes them, plus the ids in
    ID_COLUMNS hashed into `buckets` rows each; rows in a seeded shuffle. Plain tensors."""
    import polars as pl

    from ml.training_job import _training_examples

    w = job.data
    lf = _training_examples(job, encoders.spec)[0]
    last = sorted(w.train_days())[-days:]
    frame = lf.filter(pl.col("event_date").is_in(last)).collect().sort("example_id").head(rows)
    batch = encoders.transform(frame)
    ids = frame.select([(pl.col(c).cast(pl.Utf8).hash(17) % buckets).cast(pl.Int64) for c in ID_COLUMNS])
    sparse = torch.cat([batch.sparse, torch.from_numpy(ids.to_numpy(order="c"))], dim=1)
    order = torch.randperm(frame.height, generator=torch.Generator().manual_seed(0))
    return {"dense": batch.dense[order], "sparse": sparse[order], "labels": batch.labels[order],
            "cardinalities": [*encoders.cardinalities(), *[buckets] * len(ID_COLUMNS)],
            "names": [*encoders.spec.sparse, *(f"hashed_{c}" for c in ID_COLUMNS)]}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_variant(path: str, variant: str, batch_size: int, warmup: int, dim: int) -> dict:
    """Train `variant` on the saved batches in this process: samples/s and memory."""
    from ml.batch import Batch
    from ml.model import ModelConfig, ReferenceDLRM, build_model
    from ml.optim import MultiOptimizer, setup_training
    from ml.train import TrainConfig, seed_everything, train_epoch

    data = torch.load(path)
    n = len(data["labels"]) // batch_size
    batches = [Batch(*(data[k][i * batch_size:(i + 1) * batch_size] for k in ("dense", "sparse", "labels")))
               for i in range(n)]
    rss_data = _rss_mib()
    config = ModelConfig(sparse_cardinalities=data["cardinalities"], sparse_names=data["names"],
                         n_dense=batches[0].dense.shape[1], embedding_dim=dim,
                         bottom_mlp=[128, dim], top_mlp=[256, 128])
    cfg = TrainConfig(epochs=1, lr=2e-3, batch_size=batch_size, optimizer="adam",
                      sparse_optimizer="adagrad", sparse_lr=0.05, fused=variant == "fused")
    seed_everything(0)
    if variant == "sparse_adam":
        model = ReferenceDLRM(config, sparse=True)
        emb = [p for name, p in model.named_parameters() if "sparse_arch." in name]
        rest = [p for name, p in model.named_parameters() if "sparse_arch." not in name]
        opt = MultiOptimizer([torch.optim.Adam(rest, lr=cfg.lr),
                              torch.optim.SparseAdam(emb, lr=cfg.lr)])
    else:
        model = build_model(config, "torchrec" if variant == "fused" else "reference")
        model, opt = setup_training(model, cfg)
    train_epoch(model, batches[:warmup], opt, cfg)
    m = train_epoch(model, batches[warmup:], opt, cfg)
    return {"variant": variant, "samples": m["samples"], "seconds": m["seconds"],
            "samples_per_s": m["samples_per_s"], "loss": m["loss"],
            "rss_batches_mib": rss_data,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def compare(job, encoders, *, batches: int, batch_size: int, buckets: int = 1_000_000,
            dim: int = 64, warmup: int = 3, rounds: int = 1) -> dict:
    """Every variant on the same batches, each in a child process, `rounds` times: the order
    reverses from one round to the next, and each ratio pairs the runs of one round (a variant
    moves by about 10% between processes a minute apart). `variants` holds each variant's
    median run; `fused_vs_*` the median ratio, `fused_vs_*_range` its range over the rounds."""
    data = big_batches(job, encoders, rows=(batches + warmup) * batch_size, buckets=buckets)
    out: dict = {"rows_per_id_table": buckets, "dim": dim, "batch_size": batch_size, "rounds": rounds,
                 "timed_batches": len(data["labels"]) // batch_size - warmup, "runs": {v: [] for v in VARIANTS}}
    with tempfile.TemporaryDirectory(prefix="bench-big-") as tmp:
        path = str(Path(tmp) / "batches.pt")
        torch.save(data, path)
        for k in range(rounds):
            for variant in (list(VARIANTS) if k % 2 == 0 else list(VARIANTS)[::-1]):
                t0 = time.perf_counter()
                p = subprocess.run([sys.executable, "-m", "benchmarks.big_tables", "--batches", path,
                                    "--variant", variant, "--batch-size", str(batch_size),
                                    "--warmup", str(warmup), "--dim", str(dim)],
                                   capture_output=True, text=True, env={**os.environ})
                if p.returncode != 0:
                    raise RuntimeError(f"big-table variant {variant} failed:\n{p.stderr[-3000:]}")
                r = json.loads(p.stdout.strip().splitlines()[-1])
                r["wall_seconds"] = time.perf_counter() - t0
                out["runs"][variant].append(r)
                print(f"big tables, round {k + 1}/{rounds}, {VARIANTS[variant]:45s} "
                      f"{r['samples_per_s']:9.0f}/s  peak RSS {r['peak_rss_mib']:7.0f} MiB", flush=True)
    return {**out, **summary(out["runs"])}


def summary(runs: dict[str, list[dict]]) -> dict:
    """From each variant's runs (one per round, in round order): its median run (`variants`),
    and the fused path's ratio to each other one, paired within a round: median and range."""
    out: dict = {"variants": {v: sorted(rs, key=lambda r: r["samples_per_s"])[(len(rs) - 1) // 2]
                              for v, rs in runs.items()}}
    for other in ("dense", "sparse_adam"):
        ratios = [f["samples_per_s"] / o["samples_per_s"] for f, o in zip(runs["fused"], runs[other], strict=True)]
        out[f"fused_vs_{other}"] = statistics.median(ratios)
        out[f"fused_vs_{other}_range"] = [min(ratios), max(ratios)]
    return out


def table(out: dict) -> str:
    v = out["variants"]
    rounds = out.get("rounds", 1)
    lines = [f"\nBig tables: 2 hashed id tables of {out['rows_per_id_table']:,} rows, dim {out['dim']}, "
             f"{out['timed_batches']} batches of {out['batch_size']}; {rounds} round(s), median run "
             f"(fused is: the median ratio within a round [range])",
             "| path | samples/s | fused is | peak RSS MiB (batches alone) |", "|---|---:|---:|---:|"]
    for k, name in VARIANTS.items():
        r = v[k]
        if k == "fused":
            ratio = "1.00x"
        else:
            lo, hi = out[f"fused_vs_{k}_range"]
            ratio = f"{out[f'fused_vs_{k}']:.2f}x" + (f" [{lo:.2f}-{hi:.2f}]" if rounds > 1 else "")
        lines.append(f"| {name} | {r['samples_per_s']:,.0f} | {ratio} | "
                     f"{r['peak_rss_mib']:,.0f} ({r['rss_batches_mib']:,.0f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", required=True, help="a file big_batches() saved")
    p.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dim", type=int, default=64)
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    print(json.dumps(run_variant(args.batches, args.variant, args.batch_size, args.warmup, args.dim)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
