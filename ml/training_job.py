"""One training job as plain data, and the single-process entry point that runs it.

A `TrainingJob` says which gold window to read, how much of it, which model and which training
hyper-parameters. It is a picklable dataclass, so the same object drives:

* `run_training(job, encoders)` here: the one loop over epochs, in this process (the ablation,
  the experiment grid, tests, benchmarks of the model itself);
* `ml.ray_training.train_on_ray(job, encoders, num_workers=...)`: `run_training` inside Ray
  Train workers, each reading its own share of the days (the model asset).

Both resume from and write the one checkpoint format of `ml.checkpoint`. Typical use:
`run_training(job, fit_encoders(job))` with `job = TrainingJob(data=plan_window(GoldStore(uri),
train_days=28, valid_days=1))`. `ModelHParams.architecture` picks the DLRM or the two-tower.
A mapped dataset is the same job with `dataset=MAPPED` (`ml.datasets`, `ml.features.mapped_spec`).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl
import torch
from torch import nn

from ml.batch import HEADS, Batch
from ml.checkpoint import plain_state_dict
from ml.cooccurrence import COOCCURRENCE, Neighbours
from ml.datasets import FITNESS, Dataset
from ml.features import Encoders, FeatureError, FeatureSpec, with_added, with_context, without
from ml.examples import ChunkCache, iter_batches, read_examples, with_cooccurrence
from ml.gold import GoldStore, days_for_rank
from ml.model import ModelConfig, build_model
from ml.optim import setup_training
from ml.sharded import empty_batch, evaluate_sharded, gather_weights, in_lockstep, is_sharded, restore, save
from ml.train import TrainConfig, evaluate_logloss, seed_everything, train_epoch


@dataclass(kw_only=True)
class DataWindow:
    """Which examples: event dates [train_start, train_end] to train on, and the held-out days
    [valid_start, valid_end] (strictly later) for per-epoch log-loss/AUC. sample_fraction keeps
    whole users by a stable hash (ml.gold.user_kept): the same in every process."""

    gold: GoldStore
    train_start: dt.date
    train_end: dt.date
    valid_start: dt.date | None = None
    valid_end: dt.date | None = None
    sample_fraction: float = 1.0
    seed: int = 0
    # sampled negatives per positive trained on: the first k of the gold table's (sample_index
    # <= k); None: all of them. The held-out examples keep every negative.
    negatives: int | None = None

    def __post_init__(self) -> None:
        if self.negatives is not None and self.negatives < 1:
            raise ValueError(f"negatives must be >= 1 (sampled negatives per positive: without any, "
                             f"every example is a positive), got {self.negatives}")
        if self.train_start > self.train_end:
            raise ValueError(f"train_start {self.train_start} is after train_end {self.train_end}")
        if (self.valid_start is None) != (self.valid_end is None):
            raise ValueError("set both valid_start and valid_end, or neither")
        if self.valid_start is not None and self.valid_start <= self.train_end:
            raise ValueError(f"validation days must follow the training days: valid_start "
                             f"{self.valid_start} <= train_end {self.train_end}")
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
    # 1.6-1.8x the daily ranking speed of [256, 128], same MAP@10 on both datasets (docs/model.md)
    top_mlp: list[int] = field(default_factory=lambda: [128, 64])
    interaction: str = "dot"
    dcn_layers: int = 2
    dropout: float = 0.0
    with_context: bool = True  # False = the context-free ablation
    include_ids: bool = False  # user_id / class_id embeddings (never required to score)
    max_vocab: int = 10_000
    # a category seen fewer times in the encoders' sample shares the out-of-vocabulary id (the
    # frequency threshold of id embeddings: a rare user or item learns no row of its own)
    min_count: int = 1
    # features left out (names, or prefixes ending in "*"): how a feature is measured as an ablation
    drop_features: tuple[str, ...] = ()
    # numeric user_features_daily columns added as dense features (names, or prefixes ending in
    # "*"): a column a dbt model added, or the shared user embeddings joined there
    add_features: tuple[str, ...] = ()
    # "two_tower": the retrieval model (`ml.two_tower`) on the same features: tower sizes (the
    # last is the vector's), softmax temperature; it trains on the examples with a take only
    architecture: str = "dlrm"
    tower: list[int] = field(default_factory=lambda: [128, 64])
    temperature: float = 0.05

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
    # whose gold tables: the simulator's (FITNESS) or a mapping file's (MAPPED)
    dataset: Dataset = FITNESS

    def params(self) -> dict[str, Any]:
        """Flat name -> value, for MLflow params and Dagster metadata."""
        out: dict[str, Any] = {"backend": self.backend, "dataset": self.dataset.name,
                               "data.lakehouse_uri": self.data.gold.uri}  # no storage options:
        for prefix, obj in (("data", self.data), ("model", self.model), ("train", self.train)):
            for k, v in asdict(obj).items():  # they may carry credentials
                if k != "gold":
                    out[f"{prefix}.{k}"] = v.isoformat() if isinstance(v, dt.date) else v
        return out


@dataclass
class TrainingResult:
    """What a training run leaves, in this process or on Ray workers (`train_on_ray`)."""

    state_dict: dict[str, torch.Tensor]  # plain CPU weights, loadable by either backend
    model_config: ModelConfig
    # per epoch: train metrics + valid_* metrics; a resumed run's starts with the checkpoint's
    history: list[dict[str, float]]
    resumed_from_epoch: int | None = None  # the epoch of the checkpoint it resumed from
    checkpoint_path: str | None = None  # Ray: the last checkpoint it reported
    num_workers: int = 1
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Planning the window


def plan_window(
    gold: GoldStore, *, train_days: int = 28, valid_days: int = 1, valid_lists: int | None = None,
    end: dt.date | None = None, sample_fraction: float = 1.0, seed: int = 0,
    negatives: int | None = None,
) -> DataWindow:
    """The last `valid_days` event dates up to `end` (default: the latest) are held out; the
    `train_days` before them are trained on. Fails naming the table when too few days exist.

    `valid_lists`: hold out more days, the fewest latest ones holding at least this many lists
    (a user's takes on one platform and day: `GoldStore.lists_per_day`), never more than
    half of the dates (rounded up); sparse logs hold few lists a day."""
    dates = [d for d in gold.event_dates() if end is None or d <= end]
    if valid_lists is not None and dates:
        cap = max(valid_days, (len(dates) + 1) // 2)
        per_day = gold.lists_per_day(dates[-1] - dt.timedelta(days=cap - 1), dates[-1])
        held, n = 0, 0
        while n < cap and held < valid_lists:
            held += per_day.get(dates[-1] - dt.timedelta(days=n), 0)
            n += 1
        valid_days = max(valid_days, n)
    if len(dates) < valid_days + 1:
        raise ValueError(
            f"gold training_examples has {len(dates)} event date(s) up to {end or 'now'}; "
            f"need at least {valid_days + 1} (valid_days={valid_days} plus one to train on)"
        )
    last = dates[-1]
    valid_start = last - dt.timedelta(days=valid_days - 1) if valid_days else None
    train_end = (valid_start or last + dt.timedelta(days=1)) - dt.timedelta(days=1)
    train_start = max(dates[0], train_end - dt.timedelta(days=train_days - 1))
    return DataWindow(gold=gold, train_start=train_start, train_end=train_end, valid_start=valid_start,
                      valid_end=last if valid_days else None, sample_fraction=sample_fraction,
                      seed=seed, negatives=negatives)


# ---------------------------------------------------------------------------------------------
# Data


def _examples(window: DataWindow, start: dt.date, end: dt.date,
              dataset: Dataset = FITNESS, *, training: bool = True) -> pl.LazyFrame:
    lf = read_examples(
        window.gold, start=start, end=end, sample_fraction=window.sample_fraction,
        seed=window.seed, dataset=dataset,
    )
    if training and window.negatives is not None:
        lf = lf.filter(pl.col("sample_index") <= window.negatives)
    return lf


def _training_examples(job: TrainingJob, spec: FeatureSpec) -> tuple[pl.LazyFrame, Neighbours | None]:
    """The training window's examples, with the co-occurrence point in time if the spec has it
    (and the neighbours the model carries: later days take it from them, as when served)."""
    w = job.data
    lf = _examples(w, w.train_start, w.train_end, job.dataset)
    if COOCCURRENCE not in spec.dense:
        return lf, None
    return with_cooccurrence(lf, w.gold, w.train_start, w.train_end, spec.recent_items)


def job_spec(job: TrainingJob) -> FeatureSpec:
    """The job's feature spec (`Dataset.feature_spec`: `default_spec` for fitness, the mapped
    spec of the gold tables' columns), without the context features for the ablation
    (`model.with_context=False`) and `model.drop_features`, with `model.add_features`."""
    spec = job.dataset.feature_spec(job.data.gold, include_ids=job.model.include_ids)
    spec = without(with_context(spec, job.model.with_context), job.model.drop_features)
    users = job.data.gold.scan("user_features_daily").collect_schema() if job.model.add_features else {}
    return with_added(spec, job.model.add_features, users, table=job.data.gold.table_uri("user_features_daily"))


def fit_encoders(job: TrainingJob) -> Encoders:
    """Vocabularies and normalization statistics from (a bounded sample of) the training days.

    At most `encoder_fit_rows` rows are collected: whole days spread evenly over the window, so
    memory stays bounded however long the window is. A training window without rows, or a NaN /
    infinite feature, raises naming the table/column.
    """
    w = job.data
    days = w.train_days()
    spec = job_spec(job)
    lf, neighbours = _training_examples(job, spec)
    per_day = lf.group_by("event_date").len().collect()
    if per_day.height == 0:
        raise FeatureError(
            f"no training examples in {w.train_start}..{w.train_end} "
            f"(gold training_examples under {w.gold.uri})"
        )
    rows_per_day = max(1, int(per_day["len"].mean()))
    n_days = max(1, min(len(days), job.encoder_fit_rows // rows_per_day))
    present = sorted(per_day["event_date"].to_list())
    step = len(present) / n_days
    chosen = sorted({present[int(i * step)] for i in range(n_days)})
    frame = lf.filter(pl.col("event_date").is_in(chosen)).collect()
    encoders = Encoders.fit(frame, spec, max_vocab=job.model.max_vocab,
                            min_count=job.model.min_count, table="gold.training_examples")
    encoders.neighbours = neighbours
    return encoders


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
        sparse_slots=encoders.spec.slots(),
        architecture=h.architecture, tower=list(h.tower), temperature=h.temperature,
        dense_names=list(encoders.spec.dense),
        heads=HEADS[:1] if h.architecture == "two_tower" else HEADS,  # take: its positives
    )


def train_batches(
    job: TrainingJob, encoders: Encoders, *, epoch: int, rank: int = 0, world_size: int = 1,
    cache: ChunkCache | None = None, examples: pl.LazyFrame | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[Batch]:
    """This rank's training batches for one epoch (days shuffled per epoch, rows within days),
    prepared for training on `device` (`TrainConfig.loading`)."""
    w = job.data
    mine = days_for_rank(w.train_days(), rank, world_size, w.seed)
    lf = _training_examples(job, encoders.spec)[0] if examples is None else examples
    lf = lf.filter(pl.col("event_date").is_in(mine))
    if job.model.architecture == "two_tower":  # in-batch negatives: the positives only
        lf = lf.filter(pl.col("label_take") == 1)
    return iter_batches(lf, encoders, job.train.batch_size, dates=mine, **job.train.loading(device),
                        shuffle_seed=job.train.seed * 1000 + epoch, days_per_chunk=1, cache=cache)


def valid_batches(job: TrainingJob, encoders: Encoders,
                  cache: ChunkCache | None = None, device: torch.device | str = "cpu") -> Iterator[Batch]:
    w = job.data
    if w.valid_start is None or w.valid_end is None:
        return iter(())
    lf = _examples(w, w.valid_start, w.valid_end, job.dataset, training=False)
    days = [w.valid_start + dt.timedelta(days=i) for i in range((w.valid_end - w.valid_start).days + 1)]
    return iter_batches(lf, encoders, max(job.train.batch_size, 8192), dates=days,
                        **job.train.loading(device), cache=cache)


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class EpochEnd:
    """What the epoch hook gets after each epoch. `metrics` is the epoch's row of `history`: a
    hook may add to it before it saves."""

    epoch: int
    metrics: dict[str, float]
    history: list[dict[str, float]]  # every epoch so far, a resumed checkpoint's included
    model: nn.Module
    optimizer: Any

    def save(self, directory: str | Path, **meta: Any) -> Path:
        """The checkpoint of this epoch (`ml.checkpoint`), with `meta` in its checkpoint.json
        (`ml.sharded.save`: a model sharded across ranks saves on every rank)."""
        return save(directory, self.model, self.optimizer, self.epoch, history=self.history, **meta)


EpochHook = Callable[[EpochEnd], None]


def run_training(
    job: TrainingJob,
    encoders: Encoders,
    *,
    rank: int = 0,
    world_size: int = 1,
    resume_from: str | Path | None = None,
    resume_optimizer: bool = True,
    on_epoch_end: EpochHook | None = None,
    validate: bool = True,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    device: torch.device | str = "cpu",
) -> TrainingResult:
    """Train `job` in this process (one rank of `world_size` when a process group exists).

    resume_from: a checkpoint directory (`ml.checkpoint`); training continues with the epoch
    after the saved one, from its weights and (unless resume_optimizer=False, e.g. another
    optimizer layout) its optimizer state; the result's history starts with the checkpoint's.
    on_epoch_end(EpochEnd) runs after every epoch (checkpointing and reporting hook in there).
    wrap_model: e.g. DDP for the non-fused multi-worker path. device: where the model trains (batches
    are copied there as they come). Fused with world_size > 1 the tables are sharded across the ranks
    (`ml.sharded`): all validate; rank 0's result holds the gathered weights (the others' none).
    """
    t0 = time.perf_counter()
    seed_everything(job.train.seed)
    config = model_config(job, encoders)
    train_cfg = job.train
    device = torch.device(device)
    if train_cfg.fused and (job.backend != "torchrec" or device.type not in ("cpu", "cuda")):
        raise ValueError(f"train.fused needs backend='torchrec' (got {job.backend!r}) and FBGEMM's CPU "
                         f"or CUDA kernel: set fused=False to train on {device}")
    model = build_model(config, backend=job.backend).to(device)
    model, optimizer = setup_training(model, train_cfg, device)
    sharded = is_sharded(model)
    empty = empty_batch(config) if sharded else None
    if wrap_model is not None and not train_cfg.fused:
        model = wrap_model(model)  # DDP keeps the parameter tensors: the optimizer stays valid
    history: list[dict[str, float]] = []
    resumed: int | None = None
    if resume_from is not None:
        info = restore(resume_from, model, optimizer if resume_optimizer else None)
        history, resumed = info.history, info.epoch

    caches = [ChunkCache(train_cfg.cache_mb << 20) if train_cfg.cache_mb else None for _ in range(2)]
    examples = _training_examples(job, encoders.spec)[0]  # opened once: one snapshot (70 ms an epoch)
    for epoch in range(0 if resumed is None else resumed + 1, train_cfg.epochs):
        batches = train_batches(job, encoders, epoch=epoch, rank=rank, world_size=world_size,
                                cache=caches[0], examples=examples, device=device)
        metrics = train_epoch(model, in_lockstep(batches, empty) if sharded else batches,
                              optimizer, train_cfg, epoch=epoch, device=device)
        metrics["epoch"] = float(epoch)
        if validate and (sharded or rank == 0):  # sharded: every rank's forward is an all-to-all
            held_out = valid_batches(job, encoders, caches[1], device=device)
            valid = (evaluate_sharded(model, held_out, empty, device=device) if sharded
                     else evaluate_logloss(model, held_out, device=device))
            metrics.update({f"valid_{k}": v for k, v in valid.items()})
        history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(EpochEnd(epoch, metrics, history, model, optimizer))
    weights = (gather_weights(model) or {}) if sharded else plain_state_dict(model)
    return TrainingResult(state_dict=weights, model_config=config, history=history, resumed_from_epoch=resumed,
                          num_workers=world_size, seconds=time.perf_counter() - t0)


def checkpoint_hook(directory: str | Path) -> EpochHook:
    """An on_epoch_end that writes each epoch's checkpoint to `directory`, replacing the last."""

    def hook(end: EpochEnd) -> None:
        end.save(directory)

    return hook


__all__ = ["DataWindow", "ModelHParams", "TrainingJob", "TrainingResult", "plan_window", "fit_encoders",
           "job_spec", "model_config", "days_for_rank", "train_batches", "valid_batches", "EpochEnd",
           "run_training", "checkpoint_hook"]
