"""The launchpad configs of the model assets (`assets.model`): training, evaluation, promotion."""

from __future__ import annotations

import dataclasses

import dagster as dg
from pydantic import Field

from ml.datasets import FITNESS, Dataset
from ml.gold import GoldStore
from ml.train import TrainConfig
from ml.training_job import DataWindow, ModelHParams, TrainingJob, plan_window


class ModelTrainingConfig(dg.Config):
    """Hyper-parameters and data knobs of one training run (editable in the launchpad)."""

    train_days: int = Field(28, description="event days trained on, ending before the held-out days")
    valid_days: int = Field(1, description="latest days held out for validation and evaluation "
                                           "(at least; more when the protocol sizes them by lists)")
    valid_lists: int | None = Field(None, description="hold out the fewest latest days with at "
                                    "least this many lists (default: the dataset's protocol, "
                                    "`evaluation.holdout_lists`; none: valid_days)")
    sample_fraction: float = Field(1.0, description="share of users kept for training (stable hash)")
    negatives: int | None = Field(None, description="sampled negatives per positive trained on: the "
                                  "first k of gold training_examples' (dbt var negatives_per_positive); "
                                  "none: all")
    epochs: int = 2
    batch_size: int = 2048
    lr: float = Field(2e-3, description="dense parameters (Adam)")
    sparse_lr: float = Field(0.05, description="embedding tables (Adagrad, fused kernel)")
    embedding_dim: int = 16
    bottom_mlp: list[int] = Field([128, 64, 16], description="dense MLP; its last size is embedding_dim")
    top_mlp: list[int] = Field([128, 64], description="the shared MLP over the interaction (daily "
                               "ranking time grows with it: docs/model.md)")
    interaction: str = Field("dot", description="dot (DLRM) or dcn (cross network)")
    include_ids: bool | None = Field(None, description="user_id/class_id embeddings; default: the "
                                     "dataset's (off for the simulator's data: attributes carry cold "
                                     "start; on for a mapped dataset: its items may have no attributes)")
    id_min_count: int = Field(1, description="an id (or other category) seen fewer times in the "
                              "training sample gets no embedding row of its own")
    drop_features: list[str] = Field([], description="features left out (names, or prefixes "
                                     "ending in *), to measure what a feature adds")
    add_features: list[str] = Field([], description="numeric columns of gold user_features_daily "
                                    "added as dense user features (names, or prefixes ending in *): "
                                    "a column a dbt model added, or joined user embeddings")
    num_workers: int = Field(1, description="Ray Train workers")
    use_gpu: bool = Field(False, description="NCCL + sharded embeddings on GPU workers")
    seed: int = 0
    resume_run_id: str = Field("", description="resume the Ray checkpoints of this earlier Dagster "
                                               "run (set by the failure sensor after a lost worker)")

    def job(self, gold: GoldStore, window: DataWindow | None = None,
            dataset: Dataset = FITNESS, holdout_lists: int | None = None) -> TrainingJob:
        """The training job on the latest gold window (or on `window`, to repeat a job);
        `holdout_lists`: the protocol's, unless the config sets `valid_lists`."""
        include_ids = self.include_ids if self.include_ids is not None else dataset.include_ids
        # the negatives are this config's even on a given window (they pick training examples,
        # not days)
        window = dataclasses.replace(window, negatives=self.negatives) if window else plan_window(
            gold, train_days=self.train_days, valid_days=self.valid_days,
            valid_lists=self.valid_lists if self.valid_lists is not None else holdout_lists,
            sample_fraction=self.sample_fraction, seed=self.seed, negatives=self.negatives)
        return TrainingJob(
            data=window,
            model=ModelHParams(embedding_dim=self.embedding_dim, bottom_mlp=list(self.bottom_mlp),
                               top_mlp=list(self.top_mlp), interaction=self.interaction,
                               include_ids=include_ids, min_count=self.id_min_count,
                               drop_features=tuple(self.drop_features),
                               add_features=tuple(self.add_features)),
            train=TrainConfig(epochs=self.epochs, lr=self.lr, sparse_lr=self.sparse_lr,
                              batch_size=self.batch_size, optimizer="adam",
                              sparse_optimizer="adagrad", fused=True,
                              seed=self.seed),
            dataset=dataset,
        )

    def run_name(self, job: TrainingJob, root_run_id: str) -> str:
        """One name per Dagster run and its re-executions (same root run): re-executing a failed
        run resumes from its Ray checkpoints; a new materialization trains afresh."""
        return f"dlrm-{job.data.valid_end or job.data.train_end}-{root_run_id[:8]}"


class EvaluationConfig(dg.Config):
    eval_user_fraction: float = Field(0.25, description="share of users whose lists are evaluated")
    peers: bool = Field(True, description="fit the standard peers (EASE, item-kNN, ALS) on the "
                                          "training window and rank the same lists with them")
    peer_validation_days: int = Field(7, description="the last days of the training window the "
                                                     "peers' settings are chosen on")
    min_lists: int | None = Field(None, description="fewer evaluated lists than this: the evaluation "
                                                    "cannot conclude and nothing is promoted (default: "
                                                    "the dataset's protocol, 100)")


class PromotionConfig(dg.Config):
    first_must_beat_popularity: bool = Field(
        True, description="a first model is promoted only if the lower bound of its MAP@10 "
                          "ratio to popularity (95% paired bootstrap) is above 1")


__all__ = ["EvaluationConfig", "ModelTrainingConfig", "PromotionConfig"]
