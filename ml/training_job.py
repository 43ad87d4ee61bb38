"""One training job as plain data, and the single-process entry point that runs it.

A `TrainingJob` says which gold window to read, how much of it, which model and which training
hyper-parameters. It is a picklable dataclass, so the same object drives:

* `run_training(job, encoders)` here: one process, no Ray (tests, the GPU entry point,
  benchmarks of the model itself);
* `ml.ray_training.train_on_ray(job, encoders, num_workers=...)`: the same loop inside Ray
  Train workers, each reading its own share of the days.

Typical use::

    window = plan_window(lakehouse_uri, train_days=28, valid_days=1)
    job = TrainingJob(data=window, model=ModelHParams(), train=TrainConfig(epochs=2))
    encoders = fit_encoders(job)
    result = run_training(job, encoders)

A mapped dataset (any interaction log imported through a mapping file) is the same job with
`dataset="mapped"`: its spec is `ml.features.mapped_spec` of the gold tables' columns.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl
import torch
from torch import nn

from ml.batch import Batch
from ml.features import DATASETS, Encoders, FeatureError, FeatureSpec, default_spec, with_context
from ml.gold_reader import _scan, iter_batches, mapped_spec_from_gold, read_examples, table_uri
from ml.model import ModelConfig, build_model
from ml.train import (
    TrainConfig,
    evaluate_logloss,
    load_checkpoint,
    plain_state_dict,
    save_checkpoint,
    seed_everything,
    setup_training,
    train_epoch,
)


@dataclass(kw_only=True)
class DataWindow:
    """Which examples: event dates [train_start, train_end] to train on, and the held-out days
    [valid_start, valid_end] (strictly later) for per-epoch log-loss/AUC.

    sample_fraction keeps whole users by a stable hash (ml.gold_reader.user_kept), so the
    downsampled set is the same in every process and on every run.
    """

    lakehouse_uri: str
    train_start: dt.date
    train_end: dt.date
    valid_start: dt.date | None = None
    valid_end: dt.date | None = None
    storage_options: dict[str, str] | None = None
    sample_fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_start > self.train_end:
            raise ValueError(f"train_start {self.train_start} is after train_end {self.train_end}")
        if (self.valid_start is None) != (self.valid_end is None):
            raise ValueError("set both valid_start and valid_end, or neither")
        if self.valid_start is not None and self.valid_start <= self.train_end:
            raise ValueError(
                f"validation days must follow the training days: valid_start {self.valid_start} "
                f"<= train_end {self.train_end}"
            )
        if not 0.0 < self.sample_fraction <= 1.0:
            raise ValueError(f"sample_fraction must be in (0, 1], got {self.sample_fraction}")

    def train_days(self) -> list[dt.date]:
        n = (self.train_end - self.train_start).days + 1
        return [self.train_start + dt.timedelta(days=i) for i in range(n)]


@dataclass(kw_only=True)
class ModelHParams:
    """The model's shape and feature set (cardinalities come from the fitted encoders)."""

    embedding_dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [128, 64, 16])
    top_mlp: list[int] = field(default_factory=lambda: [256, 128])
    interaction: str = "dot"
    dcn_layers: int = 2
    dropout: float = 0.0
    with_context: bool = True  # False = the context-free ablation
    include_ids: bool = False  # user_id / class_id embeddings (never required to score)
    max_vocab: int = 10_000

    def __post_init__(self) -> None:
        if self.bottom_mlp and self.bottom_mlp[-1] != self.embedding_dim:
            self.bottom_mlp = [*self.bottom_mlp[:-1], self.embedding_dim]


@dataclass(kw_only=True)
class TrainingJob:
    data: DataWindow
    model: ModelHParams = field(default_factory=ModelHParams)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=2, lr=2e-3, batch_size=2048, optimizer="adam", sparse_optimizer="adagrad",
        sparse_lr=0.05, fused=True,
    ))
    backend: str = "torchrec"
    encoder_fit_rows: int = 400_000
    # "fitness" (the simulator's gold tables) or "mapped" (a mapping file's gold tables)
    dataset: str = "fitness"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")

    def params(self) -> dict[str, Any]:
        """Flat name -> value, for MLflow params and Dagster metadata."""
        out: dict[str, Any] = {"backend": self.backend, "dataset": self.dataset}
        for prefix, obj in (("data", self.data), ("model", self.model), ("train", self.train)):
            for k, v in asdict(obj).items():
                if k == "storage_options":
                    continue  # may carry credentials
                out[f"{prefix}.{k}"] = v.isoformat() if isinstance(v, dt.date) else v
        return out


@dataclass
class TrainingResult:
    state_dict: dict[str, torch.Tensor]
    model_config: ModelConfig
    history: list[dict[str, float]]  # per epoch: train metrics + valid_* metrics
    start_epoch: int = 0  # > 0 when resumed from a checkpoint


# ---------------------------------------------------------------------------------------------
# Planning the window


def event_dates(lakehouse_uri: str, storage_options: dict | None = None) -> list[dt.date]:
    """The event dates present in gold training_examples (missing/empty table: a clear error)."""
    uri = table_uri(lakehouse_uri, "gold", "training_examples")
    lf = _scan(uri, storage_options)
    dates = lf.select(pl.col("event_date").unique()).collect()["event_date"].to_list()
    if not dates:
        raise ValueError(f"no training examples: Delta table {uri} is empty")
    return sorted(dates)


def plan_window(
    lakehouse_uri: str,
    *,
    train_days: int = 28,
    valid_days: int = 1,
    end: dt.date | None = None,
    storage_options: dict | None = None,
    sample_fraction: float = 1.0,
    seed: int = 0,
) -> DataWindow:
    """The last `valid_days` event dates up to `end` (default: the latest) are held out; the
    `train_days` before them are trained on. Fails naming the table when too few days exist."""
    dates = [d for d in event_dates(lakehouse_uri, storage_options) if end is None or d <= end]
    if len(dates) < valid_days + 1:
        raise ValueError(
            f"gold training_examples has {len(dates)} event date(s) up to {end or 'now'}; "
            f"need at least {valid_days + 1} (valid_days={valid_days} plus one to train on)"
        )
    last = dates[-1]
    valid_start = last - dt.timedelta(days=valid_days - 1) if valid_days else None
    train_end = (valid_start or last + dt.timedelta(days=1)) - dt.timedelta(days=1)
    train_start = max(dates[0], train_end - dt.timedelta(days=train_days - 1))
    return DataWindow(
        lakehouse_uri=lakehouse_uri,
        train_start=train_start,
        train_end=train_end,
        valid_start=valid_start,
        valid_end=last if valid_days else None,
        storage_options=storage_options,
        sample_fraction=sample_fraction,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------
# Data


def _examples(window: DataWindow, start: dt.date, end: dt.date,
              dataset: str = "fitness") -> pl.LazyFrame:
    return read_examples(
        window.lakehouse_uri, start=start, end=end, storage_options=window.storage_options,
        sample_fraction=window.sample_fraction, seed=window.seed, dataset=dataset,
    )


def job_spec(job: TrainingJob) -> FeatureSpec:
    """The job's feature spec: `default_spec` (fitness) or the mapped spec of the gold tables'
    columns, without the context features for the ablation (`model.with_context=False`)."""
    if job.dataset == "mapped":
        w = job.data
        spec = mapped_spec_from_gold(w.lakehouse_uri, w.storage_options,
                                     include_ids=job.model.include_ids)
    else:
        spec = default_spec(include_ids=job.model.include_ids)
    return with_context(spec, job.model.with_context)


def fit_encoders(job: TrainingJob) -> Encoders:
    """Vocabularies and normalization statistics from (a bounded sample of) the training days.

    At most `encoder_fit_rows` rows are collected: whole days spread evenly over the window, so
    memory stays bounded however long the window is. A training window without rows, or a NaN /
    infinite feature, raises naming the table/column.
    """
    w = job.data
    days = w.train_days()
    lf = _examples(w, w.train_start, w.train_end, job.dataset)
    per_day = lf.group_by("event_date").len().collect()
    if per_day.height == 0:
        raise FeatureError(
            f"no training examples in {w.train_start}..{w.train_end} "
            f"(gold training_examples under {w.lakehouse_uri})"
        )
    rows_per_day = max(1, int(per_day["len"].mean()))
    n_days = max(1, min(len(days), job.encoder_fit_rows // rows_per_day))
    present = sorted(per_day["event_date"].to_list())
    step = len(present) / n_days
    chosen = sorted({present[int(i * step)] for i in range(n_days)})
    frame = lf.filter(pl.col("event_date").is_in(chosen)).collect()
    spec = job_spec(job)
    return Encoders.fit(frame, spec, max_vocab=job.model.max_vocab, table="gold.training_examples")


def model_config(job: TrainingJob, encoders: Encoders) -> ModelConfig:
    h = job.model
    return ModelConfig(
        sparse_cardinalities=encoders.cardinalities(),
        n_dense=len(encoders.spec.dense),
        embedding_dim=h.embedding_dim,
        bottom_mlp=list(h.bottom_mlp),
        top_mlp=list(h.top_mlp),
        interaction=h.interaction,
        dcn_layers=h.dcn_layers,
        dropout=h.dropout,
        sparse_names=list(encoders.spec.sparse),
    )


def days_for_rank(days: list[dt.date], rank: int, world_size: int, seed: int) -> list[dt.date]:
    """This worker's share of the training days: a seeded shuffle dealt round-robin, so each
    worker sees a spread of weekdays and the shares differ by at most one day."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    order = list(days)
    random.Random(seed).shuffle(order)
    return sorted(order[rank::world_size])


def train_batches(
    job: TrainingJob, encoders: Encoders, *, epoch: int, rank: int = 0, world_size: int = 1
) -> Iterator[Batch]:
    """This rank's training batches for one epoch (days shuffled per epoch, rows within days)."""
    w = job.data
    mine = days_for_rank(w.train_days(), rank, world_size, w.seed)
    lf = _examples(w, w.train_start, w.train_end, job.dataset).filter(pl.col("event_date").is_in(mine))
    return iter_batches(
        lf, encoders, job.train.batch_size,
        shuffle_seed=job.train.seed * 1000 + epoch, days_per_chunk=1,
    )


def valid_batches(job: TrainingJob, encoders: Encoders) -> Iterator[Batch]:
    w = job.data
    if w.valid_start is None or w.valid_end is None:
        return iter(())
    lf = _examples(w, w.valid_start, w.valid_end, job.dataset)
    return iter_batches(lf, encoders, max(job.train.batch_size, 8192))


# ---------------------------------------------------------------------------------------------
# The loop

EpochHook = Callable[[int, dict[str, float], nn.Module, Any], None]


def run_training(
    job: TrainingJob,
    encoders: Encoders,
    *,
    rank: int = 0,
    world_size: int = 1,
    resume_from: str | Path | None = None,
    on_epoch_end: EpochHook | None = None,
    validate: bool = True,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
) -> TrainingResult:
    """Train `job` in this process (one rank of `world_size` when a process group exists).

    resume_from: a checkpoint written by `ml.train.save_checkpoint`; training continues with
    the epoch after the saved one. on_epoch_end(epoch, metrics, model, optimizer) runs after
    every epoch (checkpointing and reporting hook in there). wrap_model: e.g. Ray's
    prepare_model (DDP) for the non-fused multi-worker path.
    """
    seed_everything(job.train.seed)
    config = model_config(job, encoders)
    model = build_model(config, backend=job.backend)
    train_cfg = job.train
    if train_cfg.fused and job.backend != "torchrec":
        raise ValueError("train.fused needs backend='torchrec'")
    model, optimizer = setup_training(model, train_cfg)
    if wrap_model is not None and not train_cfg.fused:
        model = wrap_model(model)  # DDP keeps the parameter tensors: the optimizer stays valid
    start_epoch = 0
    if resume_from is not None:
        start_epoch = load_checkpoint(resume_from, model, optimizer) + 1

    history: list[dict[str, float]] = []
    for epoch in range(start_epoch, train_cfg.epochs):
        metrics = train_epoch(
            model, train_batches(job, encoders, epoch=epoch, rank=rank, world_size=world_size),
            optimizer, train_cfg, epoch=epoch,
        )
        metrics["epoch"] = float(epoch)
        if validate and rank == 0:
            metrics.update({f"valid_{k}": v for k, v in
                            evaluate_logloss(model, valid_batches(job, encoders)).items()})
        history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, model, optimizer)
    return TrainingResult(
        state_dict=plain_state_dict(model), model_config=config, history=history,
        start_epoch=start_epoch,
    )


def checkpoint_hook(directory: str | Path) -> EpochHook:
    """An on_epoch_end that saves `<directory>/checkpoint.pt` after each epoch (atomically)."""
    path = Path(directory) / "checkpoint.pt"

    def hook(epoch: int, metrics: dict[str, float], model: nn.Module, optimizer: Any) -> None:
        save_checkpoint(path, model, optimizer, epoch)

    return hook


def finite_or_nan(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (float(v) if math.isfinite(float(v)) else float("nan")) for k, v in metrics.items()}


__all__ = [
    "DataWindow", "ModelHParams", "TrainingJob", "TrainingResult", "event_dates", "plan_window",
    "fit_encoders", "job_spec", "model_config", "days_for_rank", "train_batches", "valid_batches",
    "run_training", "checkpoint_hook",
]
