"""Training throughput on the gold tables: TorchRec vs the plain-PyTorch reference, Ray Train with
1 and 2 workers, and the wall time of the model asset. Speed is measured here, never in tests.

    python -m benchmarks.train_bench --lakehouse data/lakehouse [--days 7] [--skip-asset]
        [--skip-ray] [--skip-big-tables] [--repeat 1]

Each path is timed on the training step alone (batches encoded beforehand), and on the second of
two epochs with the input pipeline (reading Delta, joining, encoding): in line without the cache,
prefetched on a background thread (`TrainConfig.prefetch=2`) without the cache, and in line with
the encoded days cached from the first epoch (`TrainConfig.cache_mb`, the default); the ratio to
step only is how much the pipeline costs. "Its step share" is the same in-line epoch's own split
(1 - `input_seconds` / `seconds`, from `ml.train.train_epoch`): the step and the pipeline timed
batch by batch, so it does not depend on a step-only run at another moment of a noisy machine.
The cached run's two epochs together (`run_ratio`, and its own split `run_step_share`) are a
default training run: its first epoch reads and encodes, its second reads the cache. Those ratios
pair runs a minute apart; `paired` (`benchmarks.paired_pipeline`) pairs each day of a default
run trained with the pipeline and from batches prepared beforehand, back to back, and gives the
ratio with a bootstrap interval over the days. The big-table
comparison (`benchmarks.big_tables`) trains with two hashed id tables of 1M rows each. A last
table splits one training day's input into its parts, each timed alone (`input_parts`): reading
the gold partitions, reading and joining them, encoding, ordering, gathering the batches.

Polars' allocator is set as in the Ray workers that train (`ml.allocator`: freed pages kept for
30 s; `benchmarks.allocator_bench` compares it with polars' default). Every figure comes from the
same run on the same data (the last `--days` event days before the
held-out day), so the ratios are comparable on a noisy machine; `--repeat N` measures every path N
times, pairs each ratio within its repetition and gives the median and range. Writes
benchmarks/results/train_<name>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
# the three paths of the same model: name -> (backend, fused)
VARIANTS = {"reference (nn.EmbeddingBag)": ("reference", False),
            "torchrec EBC": ("torchrec", False),
            "torchrec fused (DMP, FBGEMM)": ("torchrec", True)}
# the same three by short names, for the command lines of the benchmarks that take a subset
PATHS = dict(zip(("reference", "ebc", "fused"), VARIANTS.values()))


def default_job(lakehouse: str, days: int, backend: str, fused: bool, batch_size: int | None = None):
    """The model asset's training job (`TrainingJob`'s default training config) on the last
    `days` training days, on `backend`, fused or not; batch_size: default, the job's."""
    from dataclasses import replace

    from ml.gold import GoldStore
    from ml.training_job import TrainingJob, plan_window

    job = TrainingJob(data=plan_window(GoldStore(lakehouse), train_days=days, valid_days=1), backend=backend)
    return replace(job, train=replace(job.train, batch_size=batch_size or job.train.batch_size, fused=fused))


def _job(lakehouse: str, days: int, backend: str, fused: bool, batch_size: int):
    """`default_job` for one epoch (each measurement sets the epochs it times)."""
    from dataclasses import replace

    job = default_job(lakehouse, days, backend, fused, batch_size)
    return replace(job, train=replace(job.train, epochs=1))


def model_only(job, encoders, n_batches: int) -> dict:
    """Samples/s of the training step alone: batches encoded up front, held in memory."""
    from ml.model import build_model
    from ml.optim import setup_training
    from ml.train import seed_everything, train_epoch
    from ml.training_job import model_config, train_batches

    batches = []
    for b in train_batches(job, encoders, epoch=0):
        batches.append(b)
        if len(batches) >= n_batches:
            break
    seed_everything(0)
    model, opt = setup_training(build_model(model_config(job, encoders), job.backend), job.train)
    train_epoch(model, batches[:5], opt, job.train)  # warm-up
    m = train_epoch(model, batches, opt, job.train)
    return {"samples": m["samples"], "seconds": m["seconds"], "samples_per_s": m["samples_per_s"]}


def with_pipeline(job, encoders, prefetch: int, cache_mb: int = 0) -> dict:
    """Training epochs over the window, reading and encoding the gold tables as training does,
    with `prefetch` batches prepared ahead on a background thread (0: in the step's thread) and
    `cache_mb` of encoded days kept across epochs (0: every epoch reads and encodes).
    Two epochs; the second is timed (the first warms up the model and the file cache, and fills
    the cache)."""
    from dataclasses import replace

    from ml.train import input_wait_share
    from ml.training_job import run_training

    job = replace(job, train=replace(job.train, epochs=2, prefetch=prefetch, cache_mb=cache_mb))
    history = run_training(job, encoders, validate=False).history
    h = history[-1]
    run_samples, run_seconds = sum(e["samples"] for e in history), sum(e["seconds"] for e in history)
    return {"prefetch": prefetch, "cache_mb": cache_mb, "samples": h["samples"], "seconds": h["seconds"],
            "input_seconds": h["input_seconds"], "samples_per_s": h["samples_per_s"],
            "run_samples_per_s": run_samples / run_seconds,
            "input_wait_share": input_wait_share([h]), "run_input_wait_share": input_wait_share(history)}


def ray_run(job, encoders, workers: int, storage: str) -> dict:
    from ml.ray_training import init_ray, train_on_ray

    init_ray()
    t0 = time.perf_counter()
    out = train_on_ray(job, encoders, num_workers=workers, storage_path=storage,
                       run_name=f"bench-{workers}w-{int(time.time())}")
    wall = time.perf_counter() - t0
    h = out.history[-1]
    samples = h.get("samples_total", h.get("samples", 0.0))
    return {"workers": workers, "wall_seconds": wall, "epoch_seconds": h.get("seconds"),
            "samples": samples, "samples_per_s_epoch": samples / h["seconds"] if h.get("seconds") else None}


def asset_run(lakehouse: str, days: int) -> dict:
    """`dagster asset materialize --select dlrm_model` in a child process, fresh instance and
    MLflow store (the lakehouse is only read)."""
    with tempfile.TemporaryDirectory(prefix="bench-asset-") as tmp:
        env = {**os.environ, "DAGSTER_HOME": tmp,
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        if not lakehouse.startswith("s3://"):
            env["LAKEHOUSE_URI"] = str(Path(lakehouse).absolute())
        Path(tmp, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        cfg = {"ops": {"dlrm_model": {"config": {"train_days": days}}}}
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "orchestration.definitions",
             "--select", "dlrm_model", "--config-json", json.dumps(cfg)],
            env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"dlrm_model failed:\n{p.stderr[-3000:]}")
    return {"wall_seconds": wall, "train_days": days}


def input_parts(job, encoders, repeat: int = 5) -> dict:
    """Where one training day's input time goes, each part alone in ms (best and median of
    `repeat`): reading each gold partition the day joins, reading and joining them as training
    does (`ml.examples.collect_days`), encoding (`Encoders.transform`, and `prepare` within it),
    ordering the rows and gathering the batches."""
    import datetime as dt

    import polars as pl

    from ml.examples import _row_order, _take, collect_days
    from ml.features import prepare
    from ml.training_job import _training_examples

    days = job.data.train_days()
    day = days[len(days) // 2]
    before = day - dt.timedelta(days=1)
    gold = job.data.gold
    lf = _training_examples(job, encoders.spec)[0]

    def timed(fn) -> dict:
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - t0) * 1e3)
        return {"best_ms": min(runs), "median_ms": statistics.median(runs)}

    out: dict = {"day": str(day)}
    reads = {"training_examples": pl.col("event_date") == day}
    for name in ("user_features_daily", "class_features_daily", job.dataset.affinity_table):
        if name:
            reads[name] = pl.col("feature_date") == before
    for name, pred in reads.items():
        try:
            scan = gold.scan(name).filter(pred)
        except FileNotFoundError:  # an older lakehouse without the affinity table: joined as none
            continue
        out[f"read {name}"] = timed(scan.collect)
    frame = collect_days(lf, [day])
    out["rows"] = frame.height
    out["read and join (training's collect)"] = timed(lambda: collect_days(lf, [day]))
    out["encode (Encoders.transform)"] = timed(lambda: encoders.transform(frame))
    out["  of which prepare"] = timed(lambda: prepare(frame))
    out["order the rows"] = timed(lambda: _row_order(frame, 1))
    encoded, order = encoders.transform(frame), _row_order(frame, 1)
    # the day reordered in one gather; its batches are slices of it (`ml.examples._batches`)
    out["gather the batches"] = timed(lambda: _take(encoded, order))
    total = sum(out[k]["best_ms"] for k in ("read and join (training's collect)", "encode (Encoders.transform)",
                                             "order the rows", "gather the batches"))
    out["us_per_row"] = round(total * 1e3 / frame.height, 3)
    return out


def _parts_table(parts: dict) -> str:
    lines = [f"\none training day's input, each part alone ({parts['day']}, {parts['rows']:,} rows; "
             f"{parts['us_per_row']} us a row in all, best runs)",
             "| part | best ms | median ms |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['best_ms']:.1f} | {v['median_ms']:.1f} |" for k, v in parts.items() if isinstance(v, dict)]
    return "\n".join(lines)


RATIOS = ("pipeline_ratio", "prefetched_ratio", "cached_ratio", "run_ratio", "inline_step_share",
          "run_step_share")


def _measure_paths(args, variants: dict, encoders, default_cache: int) -> dict:
    """One repetition: each path's step only, then its epochs with the pipeline, and the ratios."""
    rep: dict = {key: {} for key in ("model_only", "pipeline_inline", "pipeline_prefetched",
                                     "pipeline_cached", *RATIOS)}
    for name, (backend, fused) in variants.items():
        job = _job(args.lakehouse, args.days, backend, fused, args.batch_size)
        rep["model_only"][name] = model_only(job, encoders, args.model_batches)
        rep["pipeline_inline"][name] = with_pipeline(job, encoders, prefetch=0)
        rep["pipeline_prefetched"][name] = with_pipeline(job, encoders, prefetch=2)
        rep["pipeline_cached"][name] = with_pipeline(job, encoders, prefetch=0, cache_mb=default_cache)
        step = rep["model_only"][name]["samples_per_s"]
        inline = rep["pipeline_inline"][name]["samples_per_s"]
        ahead = rep["pipeline_prefetched"][name]["samples_per_s"]
        cached = rep["pipeline_cached"][name]["samples_per_s"]
        rep["pipeline_ratio"][name], rep["prefetched_ratio"][name] = inline / step, ahead / step
        rep["cached_ratio"][name] = cached / step
        # a default training run (cache on, 2 epochs), both epochs: what a user waits for
        rep["run_ratio"][name] = rep["pipeline_cached"][name]["run_samples_per_s"] / step
        # within the in-line epoch itself: the share of its time not spent waiting for the next
        # batch (step and pipeline timed batch by batch, so the machine's load moves both alike)
        rep["inline_step_share"][name] = 1 - rep["pipeline_inline"][name]["input_wait_share"]
        # the default run's two epochs, split the same way
        rep["run_step_share"][name] = 1 - rep["pipeline_cached"][name]["run_input_wait_share"]
        print(f"{name:32s} step only {step:9.0f}/s  pipeline in line {inline:9.0f}/s "
              f"({inline / step:.2f})  prefetched {ahead:9.0f}/s ({ahead / step:.2f})  "
              f"cached (epoch 2) {cached:9.0f}/s ({cached / step:.2f})  "
              f"default run (2 epochs) {rep['run_ratio'][name]:.2f}", flush=True)
    return rep


def _table(out: dict, variants: dict) -> str:
    """Step-only samples/s (median over the repetitions) and each ratio to it: median [min-max]."""
    reps = out["repetitions"]

    def cell(key: str, name: str) -> str:
        lo, hi = out[key + "_range"][name]
        return f"{out[key][name]:.2f}" + (f" [{lo:.2f}-{hi:.2f}]" if len(reps) > 1 else "")

    steps = {name: statistics.median(r["model_only"][name]["samples_per_s"] for r in reps) for name in variants}
    base = steps["reference (nn.EmbeddingBag)"]
    lines = [f"\n{len(reps)} repetition(s); ratios to step only, paired within a repetition: median [range]",
             "| path | step only samples/s | vs reference | first epoch, pipeline in line | its step share "
             "| prefetched | cached epoch (default) | default run, both epochs | its step share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in variants:
        lines.append(f"| {name} | {steps[name]:,.0f} | {steps[name] / base:.2f}x | {cell('pipeline_ratio', name)} "
                     f"| {cell('inline_step_share', name)} | {cell('prefetched_ratio', name)} | {cell('cached_ratio', name)} "
                     f"| {cell('run_ratio', name)} | {cell('run_step_share', name)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ml.allocator import VAR, keep_freed_pages

    # as in the Ray workers that train (`ml.allocator`); before anything imports polars
    allocator_applied = keep_freed_pages()
    from ml.train import TrainConfig
    from ml.training_job import fit_encoders

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", required=True)
    p.add_argument("--days", type=int, default=7, help="training days per measurement")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--model-batches", type=int, default=150)
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-asset", action="store_true")
    p.add_argument("--skip-big-tables", action="store_true")
    p.add_argument("--big-batches", type=int, default=40, help="timed batches per big-table path")
    p.add_argument("--big-rounds", type=int, default=3,
                   help="runs of each big-table path, in alternating order (ratios: median and range)")
    p.add_argument("--name", default="small")
    p.add_argument("--repeat", type=int, default=1,
                   help="repetitions of the per-path measurements (ratios: median and range)")
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)

    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "torch": torch.__version__,
                             "polars_allocator": os.environ[VAR] if allocator_applied else "polars' default"},
                 "days": args.days, "batch_size": args.batch_size}
    ref_job = _job(args.lakehouse, args.days, "reference", False, args.batch_size)
    encoders = fit_encoders(ref_job)
    variants = VARIANTS
    default_cache = TrainConfig().cache_mb
    # every path measured in each repetition, its ratios paired within it (the machine's load
    # moves between repetitions); the table gives their median and range
    out["repetitions"] = [_measure_paths(args, variants, encoders, default_cache)
                          for _ in range(args.repeat)]
    for key in RATIOS:
        out[key] = {name: statistics.median(r[key][name] for r in out["repetitions"]) for name in variants}
        out[key + "_range"] = {name: [min(r[key][name] for r in out["repetitions"]),
                                      max(r[key][name] for r in out["repetitions"])] for name in variants}
    from benchmarks.paired_pipeline import paired_days, table as paired_table

    # issue 17's ratio with its interval: a default training run, each day trained with the
    # pipeline and from batches prepared beforehand, back to back
    out["paired"] = {name: paired_days(default_job(args.lakehouse, args.days, backend, fused, args.batch_size),
                                       encoders) for name, (backend, fused) in variants.items()}
    out["input_parts"] = input_parts(ref_job, encoders)
    if not args.skip_big_tables:
        from benchmarks.big_tables import compare

        out["big_tables"] = compare(ref_job, encoders, batches=args.big_batches, batch_size=args.batch_size,
                                   rounds=args.big_rounds)
    if not args.skip_ray:
        job = _job(args.lakehouse, args.days, "torchrec", True, args.batch_size)
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as storage:
            out["ray"] = [ray_run(job, encoders, w, storage) for w in (1, 2)]
    if not args.skip_asset:
        out["asset"] = asset_run(args.lakehouse, 28)

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"train_{args.name}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(_table(out, variants))
    print("\n" + paired_table(out["paired"]))
    print(_parts_table(out["input_parts"]))
    if "big_tables" in out:
        from benchmarks.big_tables import table

        print(table(out["big_tables"]))
    if "ray" in out:
        print("\n| Ray Train workers | wall s (incl. start-up) | epoch s | samples/s in the epoch |")
        print("|---:|---:|---:|---:|")
        for r in out["ray"]:
            print(f"| {r['workers']} | {r['wall_seconds']:.1f} | {r['epoch_seconds']:.1f} | "
                  f"{r['samples_per_s_epoch']:,.0f} |")
    if "asset" in out:
        print(f"\nmodel asset (dlrm_model, {out['asset']['train_days']} days, 2 epochs): "
              f"{out['asset']['wall_seconds']:.0f} s end to end")
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
