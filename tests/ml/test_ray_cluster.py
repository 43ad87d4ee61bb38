"""Training and scoring on a real two-node Ray cluster (`RAY_ADDRESS`), started on loopback.

`ray.cluster_utils.Cluster` starts a head and a second node as separate raylets on this
machine, one CPU each, so two Ray Train workers (or two scoring actors) can only run one per
node. The project's code connects through `RAY_ADDRESS`, as it would to any cluster; each rank
and each actor reports the node it ran on.

About half a minute to a minute on 2 cores, which `make test` cannot spare within its 15
minutes: marked `extra`, it runs with `make test-extra`.
"""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
import polars as pl
import pytest

from ml.gold import GoldStore
from ml.inference import InferenceStats, ModelRef, run_inference
from ml.rows import InferenceSettings
from ml.training_job import fit_encoders
from tests.ml.ray_job import check_state_dict, tiny_job
from tests.ml.tiny_gold import E2

pytestmark = [pytest.mark.slow, pytest.mark.extra]


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="rc_", dir="/tmp")  # short: Ray's sockets live under it
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "POLARS_MAX_THREADS": "1"}.items():
            mp.setenv(key, value)
        if ray.is_initialized():
            ray.shutdown()
        nodes = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "temp_dir": temp_dir, "include_dashboard": False})
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
        mp.setenv("RAY_ADDRESS", nodes.address)
        try:
            yield nodes
        finally:
            ray.shutdown()
            nodes.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


def test_training_and_scoring_run_across_both_nodes(cluster, candidates_lake, tmp_path):
    import mlflow
    import ray

    from ml import tracking
    from ml.ray_training import init_ray, train_on_ray

    init_ray()  # RAY_ADDRESS: connects to the cluster, starts nothing
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert ray.cluster_resources()["CPU"] == 2.0

    job = tiny_job(candidates_lake)
    encoders = fit_encoders(job)
    out = train_on_ray(job, encoders, num_workers=2, storage_path=str(tmp_path / "runs"),
                       run_name="cluster")
    assert [h["world_size"] for h in out.history] == [2.0, 2.0]
    assert [h["nodes"] for h in out.history] == [2.0, 2.0]  # one rank on each node
    assert out.history[-1]["samples_total"] == 198  # every training example, split over the ranks
    check_state_dict(out, encoders, job)

    # the trained model, logged to MLflow, scored by two actors, one on each node
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment("cluster", uri, (tmp_path / "artifacts").as_uri())
    with mlflow.start_run():
        info = tracking.log_scoring_model(state_dict=out.state_dict, model_config=out.model_config,
                                          encoders=encoders)
    settings = InferenceSettings(exclude_days=14, top_k=5, distinct_rows=False)
    stats = InferenceStats()
    _, frames = run_inference(ModelRef(info.model_uri, 1, uri), GoldStore(candidates_lake), E2,
                              settings, use_ray=True, num_workers=2, stats=stats)
    rows = pl.concat(list(frames))
    assert stats.workers == 2 and stats.nodes == 2
    # the same rows as scoring in this process with the same model
    _, local = run_inference(ModelRef(info.model_uri, 1, uri), GoldStore(candidates_lake), E2,
                             settings, use_ray=False)
    local = pl.concat(list(local))
    keys = ["user_id", "platform", "row_id", "rank"]
    assert rows.height == local.height == 40 * 3 * 2  # 40 users, 3 rows, 2 classes left each
    a, b = rows.sort(keys), local.sort(keys)
    assert a["class_id"].to_list() == b["class_id"].to_list()
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), rtol=1e-5)


def test_a_node_lost_mid_scoring_fails_the_run_cleanly(cluster, candidates_lake, tmp_path):
    """A node dies while its actor scores: the iterator raises (the asset then commits nothing,
    `tests/test_serving_end_to_end.py`), and the other actors are released."""
    import mlflow
    import ray

    from ml import tracking
    from ml.ray_training import init_ray
    from ml.training_job import run_training

    init_ray()
    job = tiny_job(candidates_lake)
    encoders = fit_encoders(job)
    out = run_training(job, encoders, validate=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment("cluster-loss", uri, (tmp_path / "artifacts").as_uri())
    with mlflow.start_run():
        info = tracking.log_scoring_model(state_dict=out.state_dict, model_config=out.model_config,
                                          encoders=encoders)
    settings = InferenceSettings(exclude_days=14, top_k=5, users_per_batch=2)  # 20 batches
    stats = InferenceStats()
    _, frames = run_inference(ModelRef(info.model_uri, 1, uri), GoldStore(candidates_lake), E2,
                              settings, use_ray=True, num_workers=2, stats=stats)
    first = next(frames)
    assert first.height > 0 and stats.nodes == 2
    worker = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)
    cluster.remove_node(worker, allow_graceful=False)
    try:
        with pytest.raises(ray.exceptions.RayError):
            for _ in frames:
                pass
        assert stats.batches < 20  # it stopped; nothing pretends the day was scored
    finally:
        cluster.add_node(num_cpus=1)  # the cluster as the other tests found it
        cluster.wait_for_nodes()
