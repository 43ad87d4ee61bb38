"""The tiny training job the Ray tests run (tests/ml/test_ray_training.py and
tests/faults/test_ray_worker_kill.py), and the check that what they trained loads and scores."""

from __future__ import annotations

import torch

from ml.gold import GoldStore
from ml.model import build_model
from ml.train import TrainConfig
from ml.training_job import ModelHParams, TrainingJob, plan_window, train_batches


def tiny_job(lake: str, *, epochs: int = 2, batch_size: int = 64) -> TrainingJob:
    """The training job of the Ray tests on conftest's `ray_gold_lake`."""
    # event dates E1, E2 to train on (78 and 120 examples), E3 held out
    window = plan_window(GoldStore(lake), train_days=2, valid_days=1)
    return TrainingJob(
        data=window,
        model=ModelHParams(embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8]),
        train=TrainConfig(
            epochs=epochs, lr=0.01, sparse_lr=0.05, batch_size=batch_size,
            sparse_optimizer="adagrad", fused=True,
        ),
    )


def check_state_dict(out, encoders, job) -> torch.Tensor:
    """The trained weights load into the reference model and give finite logits."""
    model = build_model(out.model_config, "reference")
    model.load_state_dict(out.state_dict, strict=True)
    model.eval()  # as scored (the two-tower's training forward is the in-batch matrix)
    batch = next(iter(train_batches(job, encoders, epoch=0)))
    with torch.no_grad():
        logits = model(batch.dense, batch.sparse)
    assert logits.shape == (len(batch), len(out.model_config.heads))
    assert torch.isfinite(logits).all()
    return logits
