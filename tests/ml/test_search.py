"""The Ray Tune search: trials on validation days only, each an MLflow child run of one parent."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from ml.gold import GoldStore
from ml.search import DEFAULT_SPACE, comparison, param_space, run_search, validation_job
from ml.train import TrainConfig
from ml.training_job import ModelHParams, TrainingJob, plan_window


def _base(lake) -> TrainingJob:
    return TrainingJob(data=plan_window(GoldStore(lake), train_days=2, valid_days=1),
                       model=ModelHParams(embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8]),
                       train=TrainConfig(epochs=1, lr=0.01, batch_size=32), backend="reference")


def test_trials_validate_on_the_end_of_the_training_window_never_the_held_out_days(candidates_lake):
    base = _base(candidates_lake)
    job = validation_job(base, 1, {"lr": 0.003, "embedding_dim": 8, "train_days": 1, "negatives": 2})
    w, b = job.data, base.data
    assert (w.valid_start, w.valid_end) == (b.train_end, b.train_end)  # the last training day
    assert w.valid_end < b.valid_start and w.train_end == b.train_end - dt.timedelta(days=1)
    assert (job.train.lr, job.model.embedding_dim, w.negatives) == (0.003, 8, 2)
    assert "negatives" in DEFAULT_SPACE  # the negatives ratio is searched by default
    with pytest.raises(ValueError, match=r"unknown knob\(s\) \['learning_rate'\]"):
        validation_job(base, 1, {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="too short for 2 validation day"):
        validation_job(base, 2, {})
    with pytest.raises(ValueError, match=r"search space 'lr': expected one of \{choice"):
        param_space({"lr": [0.1, 0.2]})


@pytest.mark.slow
def test_a_search_logs_each_trial_under_one_parent_and_names_the_best(candidates_lake, tmp_path):
    from ml import tracking
    from ml.ray_training import init_ray
    from ml.workflow import Tracking

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    init_ray(num_cpus=2)
    uri = tracking.default_tracking_uri(tmp_path)
    tr = Tracking(tracking_uri=uri, artifact_root=tracking.default_artifact_root(tmp_path))
    space = {"embedding_dim": {"choice": [4, 8]}, "lr": {"loguniform": [0.001, 0.05]}}
    parent, rows, best = run_search(_base(candidates_lake), space, tr, samples=2, validation_days=1,
                                    parallel=2, eval_fraction=1.0, storage=str(tmp_path / "tune"))
    assert len(rows) == 2 and all(r["config"]["embedding_dim"] in (4, 8) for r in rows)
    assert all(0.001 <= r["config"]["lr"] <= 0.05 for r in rows)
    assert best == max(rows, key=lambda r: r["map@10"])["config"]
    client = tracking.client(uri)
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert {c.info.run_id for c in children} == {r["run_id"] for r in rows}
    base = _base(candidates_lake).data
    for c in children:  # each validated on the last training day, never the held-out day
        assert c.data.params["search.validation_days"] == f"{base.train_end}..{base.train_end}"
        assert "validation.map_at_10" in c.data.metrics or "validation.map@10" in c.data.metrics
    assert client.get_run(parent).data.tags["best_run"] in {r["run_id"] for r in rows}
    assert comparison(rows).count("\n") == 3
    assert "search.md" in [a.path for a in client.list_artifacts(parent)]
