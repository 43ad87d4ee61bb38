"""The experiment grid: configs in parallel as Ray tasks, child MLflow runs under one parent."""

from __future__ import annotations

import os

import pytest

from ml.experiments import comparison, expand, run_grid
from ml.gold import GoldStore
from ml.train import TrainConfig
from ml.training_job import ModelHParams, TrainingJob, plan_window

pytestmark = pytest.mark.slow


def test_expand_is_the_cartesian_product():
    grid = expand({"b": [1, 2], "a": ["x"]})
    assert grid == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]


def test_grid_runs_in_parallel_under_one_parent(candidates_lake, tmp_path):
    from ml import tracking
    from ml.ray_training import init_ray
    from ml.workflow import Tracking

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    init_ray(num_cpus=2)
    uri = tracking.default_tracking_uri(tmp_path)
    tr = Tracking(tracking_uri=uri, artifact_root=tracking.default_artifact_root(tmp_path))
    base = TrainingJob(data=plan_window(GoldStore(candidates_lake), train_days=2, valid_days=1),
                       model=ModelHParams(embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8]),
                       train=TrainConfig(epochs=1, lr=0.01, batch_size=32), backend="reference")
    parent, rows = run_grid(base, {"embedding_dim": [4, 8]}, tr, parallel=2, eval_fraction=1.0)
    assert len(rows) == 2 and {r["config"]["embedding_dim"] for r in rows} == {4, 8}
    client = tracking.client(uri)
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert {c.info.run_id for c in children} == {r["run_id"] for r in rows}
    assert all("eval.map_at_10" in c.data.metrics for c in children)
    table = comparison(rows)
    assert table.count("\n") == 3 and "embedding_dim" in table
    arts = [a.path for a in client.list_artifacts(parent)]
    assert "comparison.md" in arts
