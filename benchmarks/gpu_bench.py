"""Training and exhaustive-scoring throughput of the demo model on one device (a GPU, or the CPU),
on synthetic data of the real shape. One short run, no lakehouse, no MLflow:

    python -m benchmarks.gpu_bench [--device cuda|cpu] [--seconds 5] [--out FILE]

It drives the project's own plain entry points, nothing re-implemented:

* training: the plain-PyTorch reference DLRM (`ml.model.build_model(..., "reference")`, one
  `nn.EmbeddingBag` per feature) through `ml.optim.setup_training` and `ml.train.train_epoch(...,
  device=)`, with the demo's optimizers (Adam dense, Adagrad embeddings). Two ways per batch size:
  - "step only": the batches already on the device (a pool of 4, cycled);
  - "input pipeline": an encoded data set held on the host; every step gathers a shuffled batch
    into pinned host memory and `train_epoch` copies it to the device with non_blocking=True.
    Reading Delta and encoding with polars (the real pipeline) is not part of it.
  - "prefetched": the same gathers on a background thread (`ml.prefetch`), `GPU_PREFETCH`
    batches ahead, as the training job prepares its batches on a GPU (`TrainConfig.prefetch_depth`).
  bf16 is `torch.autocast` around the model's forward (the loss in fp32), by a thin wrapper:
  `train_epoch` has no autocast of its own.
* scoring: `ml.factorized.FactorizedDLRM(..., device=)` for users x candidate classes, fp32 and
  bf16. "kernel": the query side and `score` with the inputs (pair features included) already on
  the device, the class side kept across calls as batch inference keeps it; "end to end":
  `factorized_score_matrix`, which builds the pair features on the host (numpy), copies each chunk
  to the device and the scores back. Before timing, each precision is checked against the DLRM
  applied to the explicit pairs (`ml.pairs.score_matrix`) on a slice of users, on the same device
  (and on the CPU): fp32 within 1e-4, bf16 within 5% of the largest logit (the tolerances of
  tests/ml/test_factorized.py), with the top-10 overlap.

The shape is the demo champion's: `ml.features.default_spec()` (20 sparse, 55 dense features),
vocabularies of the `small` simulator (`SMALL_VOCAB`), embedding dim 16, bottom MLP [128, 64, 16],
top MLP [128, 64], "dot", heads take/complete/music_like (`ml.training_job.ModelHParams`; a test
holds these equal). Imports only torch, numpy and
`ml.batch/cooccurrence/features/pairs/factorized/model/optim/prefetch/train`: no torchrec, fbgemm, polars,
Ray, Dagster, Delta or MLflow.

Every measurement has its own time budget (--seconds, warm-up excluded, torch.cuda.synchronize
around the timing) and its own try/except: an error (say, out of memory at the largest batch) is
recorded in the JSON and the others still run. --total-seconds skips what would start after it.
The JSON is rewritten after every measurement, so a run cut short leaves what it measured.

Over 400 lines: three measurements (training, exhaustive scoring, end to end) with their
correctness checks, run as one command on a GPU machine lent for minutes.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import itertools
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ml.batch import HEADS, Batch
from ml.factorized import FactorizedDLRM, factorized_score_matrix, pair_dense_features
from ml.features import DISCIPLINES, PAIR_FEATURES, Encoders, FeatureSpec, default_spec
from ml.model import ModelConfig, build_model
from ml.pairs import PairEncoder, Side, score_matrix
from ml.optim import setup_training
from ml.prefetch import prefetch
from ml.train import GPU_PREFETCH, TrainConfig, seed_everything, train_epoch

RESULTS = Path(__file__).parent / "results"

# The demo's model and optimizers: ml.training_job.ModelHParams() and TrainingJob's default
# TrainConfig (tests/ml/test_gpu_bench.py holds them equal; not imported: ml.training_job needs
# polars and deltalake).
MODEL_SHAPE: dict[str, Any] = dict(embedding_dim=16, bottom_mlp=[128, 64, 16], top_mlp=[128, 64],
                                   interaction="dot", dcn_layers=2, dropout=0.0)
TRAIN_CONFIG: dict[str, Any] = dict(lr=2e-3, optimizer="adam", sparse_optimizer="adagrad",
                                    sparse_lr=0.05, fused=False)

# Known values per sparse feature of default_spec() in the `small` simulator (simulator/config.py
# and simulator/vocab.py): 55 instructors, 9 disciplines, 5 body focuses, 9 genres, 9 durations,
# 3 platforms / equipment / fitness levels, 3 genders, 5 countries, 24 hours, 7 weekdays.
# Encoders.cardinalities() adds the out-of-vocabulary id 0.
N_INSTRUCTORS = 55
SMALL_VOCAB: dict[str, int] = {
    "fitness_level": 3, "gender": 3, "country": 5, "top_instructor_id": N_INSTRUCTORS,
    "top_discipline": 9, "last_discipline": 9, "last_body_focus": 5,
    "last_instructor_id": N_INSTRUCTORS, "last_platform": 3,
    "instructor_id": N_INSTRUCTORS, "discipline": 9, "equipment": 3, "body_focus": 5,
    "music_genre": 9, "duration_bucket": 9,
    "platform": 3, "hour_of_day": 24, "day_of_week": 7, "prev_discipline": 9, "prev_body_focus": 5,
}
FALLBACK_VOCAB = 16
# the app's candidate classes on a day of the small demo (docs/benchmarks.md, "Batch inference": 2,798)
DEMO_CLASSES = 2_800


# ---------------------------------------------------------------------------------------------
# Synthetic model, encoders and data of the demo's shape


def synthetic_encoders(spec: FeatureSpec, seed: int = 0) -> tuple[Encoders, list[str]]:
    """Encoders for `spec` with the small demo's vocabulary sizes and plausible statistics.

    Returns (encoders, features whose size is not in SMALL_VOCAB, given FALLBACK_VOCAB)."""
    rng = np.random.default_rng(seed)
    fallback = [n for n in spec.sparse if n not in SMALL_VOCAB]
    vocab = {n: [f"{n}={i}" for i in range(SMALL_VOCAB.get(n, FALLBACK_VOCAB))] for n in spec.sparse}
    mean = {n: float(rng.uniform(0.0, 1.0)) for n in spec.dense}
    std = {n: float(rng.uniform(0.3, 2.0)) for n in spec.dense}
    return Encoders(spec=spec, vocab=vocab, mean=mean, std=std), fallback


def demo_model_config(encoders: Encoders) -> ModelConfig:
    """As `ml.training_job.model_config` builds it from the encoders."""
    return ModelConfig(
        sparse_cardinalities=encoders.cardinalities(), n_dense=len(encoders.spec.dense),
        embedding_dim=MODEL_SHAPE["embedding_dim"], bottom_mlp=list(MODEL_SHAPE["bottom_mlp"]),
        top_mlp=list(MODEL_SHAPE["top_mlp"]), heads=HEADS, interaction=MODEL_SHAPE["interaction"],
        dcn_layers=MODEL_SHAPE["dcn_layers"], dropout=MODEL_SHAPE["dropout"],
        sparse_names=list(encoders.spec.sparse),
    )


def synthetic_examples(config: ModelConfig, n: int, seed: int = 0) -> Batch:
    """n encoded training examples on the host: normalized dense, in-vocabulary ids, 0/1 labels."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(n, config.n_dense, generator=g)
    sparse = torch.stack([torch.randint(0, c, (n,), generator=g) for c in config.sparse_cardinalities],
                         dim=1)
    rates = torch.tensor([0.3, 0.2, 0.1])[: len(config.heads)]
    labels = (torch.rand(n, len(config.heads), generator=g) < rates).float()
    return Batch(dense.contiguous(), sparse.contiguous(), labels.contiguous())


def synthetic_sides(encoders: Encoders, n_users: int, n_classes: int,
                    seed: int = 0) -> tuple[Side, Side]:
    """(users, classes) as `PairEncoder.encode_users/encode_classes` return them, with the raw
    codes the pair features need. Codes are those a PairEncoder would give: instructor k
    (sparse id k + 1) -> code k, discipline d -> code N_INSTRUCTORS + d."""
    spec = encoders.spec
    cards = encoders.cardinalities()
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_codes = N_INSTRUCTORS + len(DISCIPLINES)

    def side(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        dense = torch.randn(n, len(spec.dense), generator=g)
        sparse = torch.stack([torch.randint(1, max(c, 2), (n,), generator=g) for c in cards], dim=1)
        return dense, sparse.clamp_(max=torch.tensor(cards) - 1)

    def sparse_col(s: torch.Tensor, name: str) -> np.ndarray | None:
        return s[:, spec.sparse.index(name)].numpy() - 1 if name in spec.sparse else None

    ud, us = side(n_users)
    cd, cs = side(n_classes)
    c_inst = sparse_col(cs, "instructor_id")
    c_inst = c_inst if c_inst is not None else rng.integers(0, N_INSTRUCTORS, n_classes)
    c_disc = sparse_col(cs, "discipline")
    c_disc = c_disc if c_disc is not None else rng.integers(0, len(DISCIPLINES), n_classes)
    cold = rng.random(n_users) < 0.05  # cold-start users: no shares, no affinity, no top/last
    u_raw: dict[str, np.ndarray] = {}
    c_raw: dict[str, np.ndarray] = {}
    for name, (kind, ucol, _) in PAIR_FEATURES.items():
        if kind == "share":
            shares = rng.dirichlet(np.full(len(DISCIPLINES), 0.5), n_users)
            shares[cold] = np.nan
            u_raw[name] = shares
            c_raw[name] = c_disc.astype(np.int64)
        elif kind == "lookup":  # a few instructors per user with a value, NaN elsewhere
            table = np.full((n_users, n_codes), np.nan)
            rows = np.repeat(np.arange(n_users), 4)
            cols = rng.integers(0, N_INSTRUCTORS, rows.size)
            vals = rng.random(rows.size) if "share" in ucol else rng.integers(1, 40, rows.size)
            table[rows, cols] = vals
            table[cold] = np.nan
            u_raw[name] = table
            c_raw[name] = c_inst.astype(np.int64)[:, None]  # [C, T=1]: one instructor each
        elif kind == "cooc":  # the user's last class against 32 similar classes per class
            last = rng.integers(0, n_classes, n_users)
            last[cold] = -1
            u_raw[name] = last.astype(np.int64)[:, None]  # [n, R=1]
            sims = np.zeros((n_classes, n_classes + 1), dtype=np.float32)
            rows = np.repeat(np.arange(n_classes), 32)
            sims[rows, rng.integers(0, n_classes, rows.size)] = rng.random(rows.size) * 0.3
            c_raw[name] = sims
        else:  # "same": the user's top/last instructor or discipline against the class's
            is_disc = "discipline" in ucol
            hi = len(DISCIPLINES) if is_disc else N_INSTRUCTORS
            codes = rng.integers(0, hi, n_users) + (N_INSTRUCTORS if is_disc else 0)
            codes[cold] = -1
            u_raw[name] = codes.astype(np.int64)
            c_raw[name] = (c_disc + N_INSTRUCTORS if is_disc else c_inst).astype(np.int64)
    return Side(ud, us, u_raw), Side(cd, cs, c_raw)


def perturbed_reference(config: ModelConfig, seed: int = 0) -> nn.Module:
    """A reference DLRM whose embeddings and biases are far from zero, so every term of the
    factorization matters (as in tests/ml/test_factorized.py), logits of moderate size."""
    torch.manual_seed(seed)
    model = build_model(config, "reference").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding_bags" in name:
                p.add_(torch.randn_like(p) * 0.3)
            elif name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


# ---------------------------------------------------------------------------------------------
# Timing helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return None


class Autocast(nn.Module):
    """The DLRM's forward under `torch.autocast(dtype)`, logits returned in fp32 (so the loss of
    `ml.train.multi_head_loss` is fp32). `ml.train.unwrap` sees the DLRM through `.module`."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype

    @property
    def head_names(self) -> tuple[str, ...]:
        return self.module.head_names  # type: ignore[return-value]

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(dense, sparse).float()


def device_batches(data: Batch, batch_size: int, device: torch.device, pool: int = 4) -> Iterator[Batch]:
    """"Step only": `pool` distinct batches copied to the device once, cycled."""
    n = len(data)
    g = torch.Generator().manual_seed(1)
    held = []
    for _ in range(pool):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        held.append(Batch(data.dense[idx].to(device), data.sparse[idx].to(device),
                          data.labels[idx].to(device)))
    return itertools.cycle(held)


def host_pipeline(data: Batch, batch_size: int, device: torch.device) -> Iterator[Batch]:
    """"Input pipeline": each step gathers a shuffled batch (an epoch's permutation, last partial
    batch dropped) from the host data set into pinned memory when the device is a GPU;
    `train_epoch` copies it there with non_blocking=True. PyTorch's caching host allocator keeps
    a pinned block until its copy has finished, so the next gather never overwrites it."""
    n = len(data)
    if n < batch_size:
        raise ValueError(f"the host data set ({n} rows) is smaller than a batch ({batch_size})")
    pin = device.type == "cuda"
    g = torch.Generator().manual_seed(2)
    while True:
        perm = torch.randperm(n, generator=g)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = perm[start : start + batch_size]
            out = []
            for src in (data.dense, data.sparse, data.labels):
                buf = torch.empty((batch_size, src.shape[1]), dtype=src.dtype, pin_memory=pin)
                torch.index_select(src, 0, idx, out=buf)
                out.append(buf)
            yield Batch(*out)


def prefetched_pipeline(data: Batch, batch_size: int, device: torch.device) -> Iterator[Batch]:
    """`host_pipeline` on a background thread, GPU_PREFETCH batches ahead of the step."""
    return prefetch(host_pipeline(data, batch_size, device), GPU_PREFETCH, name="gpu-bench-batches")


# (mode, where its batches come from), in the order they are measured and printed
TRAIN_MODES = (("step only", device_batches), ("input pipeline", host_pipeline),
               ("prefetched", prefetched_pipeline))


def _until(batches: Iterator[Batch], deadline: float) -> Iterator[Batch]:
    """The batches until `deadline` (checked after each step, when the next batch is asked for)."""
    for b in batches:
        yield b
        if time.perf_counter() >= deadline:
            return


# ---------------------------------------------------------------------------------------------
# Measurements


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.started = time.perf_counter()
        self.out: dict[str, Any] = {}
        self.path = Path(args.out)

    def left(self) -> float:
        return self.args.total_seconds - (time.perf_counter() - self.started)

    def save(self) -> None:
        self.out["wall_seconds"] = round(time.perf_counter() - self.started, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.out, indent=2, default=str))
        os.replace(tmp, self.path)

    def guarded(self, where: list, record: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict:
        """Run one measurement; an exception (or the total budget spent) goes into its record."""
        if self.left() <= 0:
            record["skipped"] = f"--total-seconds {self.args.total_seconds} spent"
        else:
            try:
                _reset_peak(self.device)
                record.update(fn())
                record["peak_gib"] = _peak_gib(self.device)
            except Exception as e:  # noqa: BLE001 - recorded; the other measurements still run
                record["error"] = f"{type(e).__name__}: {e}"[:2000]
                record["traceback"] = traceback.format_exc()[-3000:]
                print(f"  ! {record.get('what', '')}: {record['error'][:300]}", flush=True)
            finally:
                _free(self.device)
        where.append(record)
        self.save()
        return record

    # -- training ------------------------------------------------------------------------------
    def train(self, config: ModelConfig, data: Batch) -> None:
        args, device = self.args, self.device
        self.out["train"] = []
        cfg = TrainConfig(epochs=1, batch_size=max(args.batch_sizes), **TRAIN_CONFIG)
        for precision in args.train_precisions:
            for bs in args.batch_sizes:
                state: dict[str, Any] = {}

                def setup(precision: str = precision) -> tuple[nn.Module, Any]:
                    seed_everything(0)
                    model: nn.Module = build_model(config, "reference").to(device)
                    if precision == "bf16":
                        model = Autocast(model, device.type, torch.bfloat16)
                    return setup_training(model, cfg)

                for mode, source in TRAIN_MODES:
                    def run(bs: int = bs, mode: str = mode, source=source) -> dict[str, Any]:
                        if "model" not in state:
                            state["model"], state["opt"] = setup()
                        model, opt = state["model"], state["opt"]
                        batches = source(data, bs, device)
                        train_epoch(model, itertools.islice(batches, args.warmup_steps), opt, cfg,
                                    device=device)
                        _sync(device)
                        t0 = time.perf_counter()
                        m = train_epoch(model, _until(batches, t0 + self._budget()), opt, cfg,
                                        device=device)
                        _sync(device)
                        seconds = time.perf_counter() - t0
                        return {"samples": int(m["samples"]), "steps": int(m["steps"]),
                                "seconds": round(seconds, 3),
                                "samples_per_s": round(m["samples"] / seconds, 1),
                                "ms_per_step": round(1000 * seconds / max(m["steps"], 1), 3),
                                "loss": round(m["loss"], 5)}

                    rec = self.guarded(self.out["train"], {
                        "what": f"train {precision} batch {bs} {mode}", "batch_size": bs,
                        "precision": precision, "mode": mode}, run)
                    if "samples_per_s" in rec:
                        print(f"  train {precision:4s} batch {bs:6d} {mode:15s} "
                              f"{rec['samples_per_s']:>14,.0f} samples/s  "
                              f"({rec['ms_per_step']:.2f} ms/step)", flush=True)
                state.clear()
                _free(device)

    def _budget(self) -> float:
        return max(0.05, min(self.args.seconds, self.left()))

    # -- scoring -------------------------------------------------------------------------------
    def score(self, config: ModelConfig, encoders: Encoders) -> None:
        args, device = self.args, self.device
        self.out["score"] = {"setup": [], "check": [], "throughput": []}
        n_users = max([*args.score_users, args.e2e_users, args.check_users])
        users, classes = synthetic_sides(encoders, n_users, args.classes, seed=3)
        model = perturbed_reference(config, seed=4)
        pe = PairEncoder(encoders)
        heads = tuple(config.heads)
        check_ui = np.arange(args.check_users)
        u_check = Side(users.dense[check_ui], users.sparse[check_ui],
                       {k: v[check_ui] for k, v in users.raw.items()})
        refs: dict[str, np.ndarray] = {}

        def reference() -> dict[str, Any]:
            # the model on the explicit pairs: on the CPU, and on the device
            refs["cpu"] = _explicit(model, pe, u_check, classes, torch.device("cpu"))
            refs["dev"] = _explicit(copy.deepcopy(model).to(device), pe, u_check, classes, device)
            return {"pairs": int(refs["dev"].size)}

        self.guarded(self.out["score"]["setup"], {
            "what": "score set-up: the model on the explicit pairs"}, reference)
        if "dev" not in refs:
            return
        ref_cpu, ref_dev = refs["cpu"], refs["dev"]
        max_pairs = max(args.max_pairs, 1)

        for precision in args.score_precisions:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            fast: dict[str, Any] = {}

            def check(precision: str = precision, dtype: torch.dtype = dtype) -> dict[str, Any]:
                fast["m"] = FactorizedDLRM(model.state_dict(), encoders.spec, heads, head=heads[0],
                                           dtype=dtype, device=device)
                fast["cs"] = fast["m"].class_side(classes)
                got = factorized_score_matrix(fast["m"], pe, u_check, classes, max_pairs=max_pairs,
                                              class_side=fast["cs"])
                return _compare(got, ref_dev, ref_cpu, precision)

            rec = self.guarded(self.out["score"]["check"], {
                "what": f"check {precision}", "precision": precision, "users": args.check_users,
                "classes": args.classes}, check)
            if "passed" in rec:
                print(f"  check {precision:4s} {args.check_users} users x {args.classes} classes: "
                      f"max |factorized - model| {rec['max_abs_err_vs_model_on_device']:.2e} "
                      f"(largest logit {rec['max_abs_logit']:.2f}), top-10 overlap "
                      f"{rec['top10_overlap']:.3f} -> {'passed' if rec['passed'] else 'FAILED'}",
                      flush=True)
            if "m" not in fast:
                continue
            f, cs = fast["m"], fast["cs"]
            base = min(args.e2e_users, n_users)
            pd_host = None

            for nu in args.score_users:
                def kernel(nu: int = nu) -> dict[str, Any]:
                    nonlocal pd_host
                    # pair features: the host computes them for a base slice once, tiled to nu
                    # users on the device (their values do not change the work)
                    if pd_host is None:
                        pd_host = pair_dense_features(pe, users, np.arange(min(512, n_users)),
                                                      classes, f.p_dense)
                    reps = -(-nu // pd_host.shape[0])
                    pd = pd_host.to(device).repeat(reps, 1, 1)[:nu]
                    sub = Side(users.dense[:nu].to(device), users.sparse[:nu].to(device), {})

                    def once() -> torch.Tensor:
                        return f.score(f.query_side(sub), cs, pd)

                    return _time_calls(once, nu * args.classes, device, args.warmup_calls,
                                       self._budget())

                rec = self.guarded(self.out["score"]["throughput"], {
                    "what": f"score {precision} kernel {nu} users", "precision": precision,
                    "mode": "kernel", "users": nu, "classes": args.classes}, kernel)
                _print_score(rec)

            def end_to_end(nu: int = base) -> dict[str, Any]:
                ui = np.arange(nu)
                sub = Side(users.dense[ui], users.sparse[ui], {k: v[ui] for k, v in users.raw.items()})

                def once() -> np.ndarray:
                    return factorized_score_matrix(f, pe, sub, classes, max_pairs=max_pairs,
                                                   class_side=cs)

                return _time_calls(once, nu * args.classes, device, 1, self._budget())

            rec = self.guarded(self.out["score"]["throughput"], {
                "what": f"score {precision} end to end {base} users", "precision": precision,
                "mode": "end to end", "users": base, "classes": args.classes,
                "max_pairs": max_pairs}, end_to_end)
            _print_score(rec)
            fast.clear()
            _free(device)


def _explicit(model: nn.Module, pe: PairEncoder, users: Side, classes: Side,
              device: torch.device) -> np.ndarray:
    """The `take` logits of the DLRM applied to every explicit (user, class) pair on `device`."""
    return score_matrix(lambda d, s: model(d.to(device), s.to(device)), pe, users, classes, head=0)


def _compare(got: np.ndarray, ref_dev: np.ndarray, ref_cpu: np.ndarray, precision: str) -> dict:
    err_dev = np.abs(got - ref_dev)
    scale = float(np.abs(ref_dev).max())
    if precision == "fp32":  # tests/ml/test_factorized.py: assert_allclose(atol=1e-4, rtol=1e-4)
        ok = bool(np.all(err_dev <= 1e-4 + 1e-4 * np.abs(ref_dev)))
        tolerance = "|err| <= 1e-4 + 1e-4 |logit|"
    else:  # ... and for bf16: max error < 5% of (largest logit + 1)
        ok = bool(err_dev.max() < 0.05 * (scale + 1))
        tolerance = "max |err| < 0.05 (max |logit| + 1)"
    k = min(10, got.shape[1])
    top_got = np.argsort(-got, axis=1, kind="stable")[:, :k]
    top_ref = np.argsort(-ref_dev, axis=1, kind="stable")[:, :k]
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_got, top_ref)]))
    return {"max_abs_err_vs_model_on_device": float(err_dev.max()),
            "max_abs_err_vs_model_on_cpu": float(np.abs(got - ref_cpu).max()),
            "max_abs_err_model_device_vs_cpu": float(np.abs(ref_dev - ref_cpu).max()),
            "max_abs_logit": scale, "top10_overlap": overlap, "tolerance": tolerance,
            "non_degenerate": scale > 0.1, "passed": ok and scale > 0.1}


def _time_calls(once: Callable[[], Any], scores_per_call: int, device: torch.device,
                warmup: int, budget: float) -> dict[str, Any]:
    for _ in range(warmup):
        once()
    _sync(device)
    calls = 0
    t0 = time.perf_counter()
    while True:
        once()
        _sync(device)
        calls += 1
        if time.perf_counter() - t0 >= budget:
            break
    seconds = time.perf_counter() - t0
    return {"calls": calls, "scores": calls * scores_per_call, "seconds": round(seconds, 3),
            "scores_per_s": round(calls * scores_per_call / seconds, 1),
            "ms_per_call": round(1000 * seconds / calls, 3)}


def _print_score(rec: dict) -> None:
    if "scores_per_s" in rec:
        print(f"  score {rec['precision']:4s} {rec['mode']:10s} {rec['users']:6d} users x "
              f"{rec['classes']} classes {rec['scores_per_s']:>16,.0f} scores/s "
              f"({rec['ms_per_call']:.2f} ms/call)", flush=True)


# ---------------------------------------------------------------------------------------------
# Report


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "cuda_runtime": torch.version.cuda, "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "processor": platform.processor(),
        "device": str(device),
    }
    if device.type != "cuda":
        info["device_name"] = platform.processor() or "cpu"
        return info
    info["device_name"] = torch.cuda.get_device_name(device)
    extras: dict[str, Callable[[], Any]] = {
        "capability": lambda: "%d.%d" % torch.cuda.get_device_capability(device),
        "total_memory_gib": lambda: round(torch.cuda.get_device_properties(device).total_memory
                                          / 2**30, 1),
        "multiprocessors": lambda: torch.cuda.get_device_properties(device).multi_processor_count,
        "bf16_supported": lambda: torch.cuda.is_bf16_supported(),
        "tf32_matmul": lambda: torch.backends.cuda.matmul.allow_tf32,
        "cudnn": lambda: torch.backends.cudnn.version(),
        "driver": lambda: torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None,
    }
    for key, get in extras.items():
        try:
            info[key] = get()
        except Exception as e:  # noqa: BLE001 - informative only
            info[key] = f"unknown ({type(e).__name__})"
    return info


def print_tables(out: dict[str, Any]) -> None:
    m = out.get("machine", {})
    print(f"\n{m.get('device_name')} ({m.get('device')}), torch {m.get('torch')}, "
          f"{out.get('wall_seconds')} s\n")
    rows = out.get("train", [])
    if rows:
        print("| training, reference DLRM | batch | " + " | ".join(f"{m} samples/s" for m, _ in TRAIN_MODES) + " |")
        print("|---|---:|" + "---:|" * len(TRAIN_MODES))
        by = {(r["precision"], r["batch_size"], r["mode"]): r for r in rows}
        for (prec, bs) in dict.fromkeys((r["precision"], r["batch_size"]) for r in rows):
            cells = []
            for mode, _ in TRAIN_MODES:
                r = by.get((prec, bs, mode), {})
                cells.append(f"{r['samples_per_s']:,.0f}" if "samples_per_s" in r
                             else "error" if "error" in r else "skipped" if "skipped" in r else "-")
            print(f"| {prec} | {bs:,} | " + " | ".join(cells) + " |")
    score = out.get("score", {})
    if score.get("check"):
        print("\n| factorized check | users x classes | max abs err vs model (device / CPU) | "
              "top-10 overlap | passed |")
        print("|---|---|---:|---:|---|")
        for r in score["check"]:
            if "passed" in r:
                print(f"| {r['precision']} | {r['users']} x {r['classes']} | "
                      f"{r['max_abs_err_vs_model_on_device']:.2e} / {r['max_abs_err_vs_model_on_cpu']:.2e} | "
                      f"{r['top10_overlap']:.3f} | {r['passed']} |")
            else:
                print(f"| {r['precision']} | {r['users']} x {r['classes']} | "
                      f"{'error' if 'error' in r else 'skipped'} | | False |")
    if score.get("throughput"):
        print("\n| factorized scoring | mode | users x classes | scores/s | ms/call |")
        print("|---|---|---|---:|---:|")
        for r in score["throughput"]:
            v = (f"{r['scores_per_s']:,.0f} | {r['ms_per_call']:.2f}" if "scores_per_s" in r
                 else ("error | " if "error" in r else "skipped | "))
            print(f"| {r['precision']} | {r['mode']} | {r['users']:,} x {r['classes']:,} | {v} |")
    if out.get("errors"):
        print(f"\n{len(out['errors'])} measurement(s) failed: " + "; ".join(out["errors"]))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in ("fp32", "bf16")]
    if bad:
        raise argparse.ArgumentTypeError(f"precisions are fp32 and bf16, got {bad}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda, cuda:N or cpu (default: cuda when available)")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="time budget of each measurement, warm-up excluded (default 5)")
    p.add_argument("--total-seconds", type=float, default=150.0,
                   help="measurements that would start after this are skipped, and none runs past "
                        "it by more than its warm-up (default 150)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own, one per core)")
    p.add_argument("--out", default=str(RESULTS / "gpu_bench.json"))
    p.add_argument("--batch-sizes", type=_ints, default=None,
                   help="training batch sizes (default 2048,8192,32768 on a GPU, 2048,8192 on CPU)")
    p.add_argument("--train-precisions", type=_names, default=None,
                   help="fp32,bf16 (default: both on a GPU, fp32 on CPU)")
    p.add_argument("--rows", type=int, default=None,
                   help="rows of the host data set of the input pipeline (default 8 x largest batch, "
                        ">= 65,536)")
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--classes", type=int, default=DEMO_CLASSES, help="candidate classes (2,800)")
    p.add_argument("--score-users", type=_ints, default=None,
                   help="users per scoring call (default 512,4096,16384 on a GPU, 512 on CPU)")
    p.add_argument("--score-precisions", type=_names, default=["fp32", "bf16"])
    p.add_argument("--e2e-users", type=int, default=512,
                   help="users of the end-to-end factorized_score_matrix call (default 512)")
    p.add_argument("--max-pairs", type=int, default=None,
                   help="factorized_score_matrix chunk (default: all the e2e users in one chunk on "
                        "a GPU, 32,768 as inference does on CPU)")
    p.add_argument("--check-users", type=int, default=16,
                   help="users of the factorized vs explicit-pairs check (default 16)")
    p.add_argument("--warmup-calls", type=int, default=2)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-score", action="store_true")
    args = p.parse_args(argv)
    gpu = str(args.device).startswith("cuda")
    if args.batch_sizes is None:
        args.batch_sizes = [2048, 8192, 32768] if gpu else [2048, 8192]
    if args.train_precisions is None:
        args.train_precisions = ["fp32", "bf16"] if gpu else ["fp32"]
    if args.score_users is None:
        args.score_users = [512, 4096, 16384] if gpu else [512]
    if args.rows is None:
        args.rows = max(8 * max(args.batch_sizes), 65_536)
    if args.max_pairs is None:
        args.max_pairs = args.e2e_users * args.classes if gpu else 32_768
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        return _run(args, argv)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    bench = Bench(args, device)
    out = bench.out
    out.update(when=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               argv=sys.argv[1:] if argv is None else argv, errors=[])
    try:
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
        out["machine"] = machine_info(device)
        spec = default_spec()
        encoders, fallback = synthetic_encoders(spec)
        config = demo_model_config(encoders)
        n_params = sum(p.numel() for p in build_model(config, "reference").parameters())
        out["model"] = {**MODEL_SHAPE, "backend": "reference (nn.EmbeddingBag)",
                        "heads": list(config.heads), "n_sparse": config.n_sparse,
                        "n_dense": config.n_dense, "cardinalities": config.sparse_cardinalities,
                        "sparse": list(spec.sparse), "parameters": n_params,
                        "vocab_fallback": fallback}
        out["train_config"] = {**TRAIN_CONFIG,
                               "bf16": "torch.autocast around the forward, fp32 loss"}
        out["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
        out["settings"]["input_pipeline"] = (
            "host data set -> shuffled gather into pinned memory -> train_epoch copies it "
            "non_blocking" if device.type == "cuda" else "host data set -> shuffled gather")
        bench.save()
        print(f"{out['machine']['device_name']} ({device}), torch {torch.__version__}; model "
              f"{config.n_sparse} sparse / {config.n_dense} dense, {n_params:,} parameters", flush=True)
        if not args.skip_train:
            data = synthetic_examples(config, args.rows, seed=0)
            bench.train(config, data)
            del data
        if not args.skip_score:
            bench.score(config, encoders)
    except Exception as e:  # noqa: BLE001 - the set-up failed: still write what there is
        out["fatal"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()[-4000:]
        print(out["traceback"], file=sys.stderr)
    records = [*out.get("train", []), *out.get("score", {}).get("setup", []),
               *out.get("score", {}).get("check", []), *out.get("score", {}).get("throughput", [])]
    out["errors"] = [f"{r['what']}: {r['error'][:200]}" for r in records if "error" in r]
    checks = out.get("score", {}).get("check", [])
    out["checks_passed"] = bool(checks) and all(r.get("passed") for r in checks)
    bench.save()
    print_tables(out)
    print(f"\nwritten: {bench.path}")
    return 1 if "fatal" in out else 0


if __name__ == "__main__":
    raise SystemExit(main())
