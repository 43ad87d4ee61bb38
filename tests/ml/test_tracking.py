"""ml.tracking / ml.serving on a real MLflow store (SQLite in a temp dir, no mocks).

The logged model must score exactly like the in-process DLRM, through pyfunc and through the
TorchScript fast path, and must load in a process where the training code cannot be imported.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before anything imports mlflow
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np
import polars as pl
import pytest
import torch

from ml import serving, tracking
from ml.features import Encoders, FeatureSpec
from ml.model import ModelConfig, ReferenceDLRM


def tiny_frame(n: int = 9) -> pl.DataFrame:
    """Candidates with the awkward dtypes: nullable ints/bools/strings, dates, an OOV value."""
    base = {
        "example_id": [f"w{i}" for i in range(n)],
        "country": ["US", "DE", None, "US", "FR", "US", "DE", "US", "XX"],
        "discipline": ["cycling", "yoga", "cycling", "running", "cycling", "yoga", "yoga",
                       "cycling", "pilates"],
        "owns_bike": [True, False, None, True, True, False, None, True, False],
        "workouts_total": [5, 200, None, 3, 0, 7, 1, 2, 40],
        "difficulty": [5.0, 2.0, 7.0, 6.0, 5.0, 1.0, 3.0, 4.0, 9.0],
        "event_date": [dt.date(2025, 3, 2)] * n,
        "release_date": [dt.date(2025, 1, 1)] * (n - 1) + [dt.date(2025, 3, 2)],
    }
    return pl.DataFrame({k: v[:n] for k, v in base.items()}, strict=False)


def tiny_model() -> tuple[ReferenceDLRM, ModelConfig, Encoders]:
    spec = FeatureSpec(
        sparse=["country", "discipline"],
        dense=["owns_bike", "workouts_total", "difficulty", "class_age_days"],
        log1p={"workouts_total"},
        fill_null={"workouts_total": 0.0},
    )
    encoders = Encoders.fit(tiny_frame(7), spec)  # "XX" / "pilates" stay out of vocabulary
    config = ModelConfig(
        sparse_cardinalities=encoders.cardinalities(), n_dense=len(spec.dense),
        embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8],
    )
    torch.manual_seed(0)
    model = ReferenceDLRM(config).eval()
    with torch.no_grad():  # spread the outputs so a wrong column or row order shows
        for p in model.parameters():
            p.mul_(3.0)
    return model, config, encoders


def reference_probs(model: ReferenceDLRM, encoders: Encoders, frame: pl.DataFrame) -> np.ndarray:
    batch = encoders.transform(frame)
    with torch.no_grad():
        return torch.sigmoid(model(batch.dense, batch.sparse)).numpy()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating it runs MLflow's migrations: seconds)."""
    data_dir = tmp_path_factory.mktemp("data")
    uri = tracking.default_tracking_uri(data_dir)
    root = tracking.default_artifact_root(data_dir)
    experiment_id = tracking.ensure_experiment("tests-tracking", uri, root)
    return {"data_dir": data_dir, "uri": uri, "artifact_root": root, "experiment_id": experiment_id}


@pytest.fixture(scope="module")
def logged(store):
    import mlflow

    model, config, encoders = tiny_model()
    with mlflow.start_run() as run:
        tracking.log_dict_metrics({"map@10": 0.25, "auc_take": 0.7})
        info = tracking.log_scoring_model(
            state_dict=model.state_dict(), model_config=config, encoders=encoders,
            registered_model_name="dlrm-tracking", input_example=tiny_frame(3),
        )
    return {"info": info, "run_id": run.info.run_id, "model": model, "encoders": encoders}


def test_store_location_and_experiment_idempotent(store, tmp_path):
    assert store["uri"] == f"sqlite:///{store['data_dir'].resolve()}/mlflow/mlflow.db"
    assert store["uri"].startswith("sqlite:////")
    assert (store["data_dir"] / "mlflow" / "mlflow.db").is_file()
    assert store["artifact_root"] == (store["data_dir"] / "mlflow" / "artifacts").resolve().as_uri()
    again = tracking.ensure_experiment("tests-tracking", store["uri"], None)
    assert again == store["experiment_id"]
    exp = tracking.client(store["uri"]).get_experiment(again)
    assert exp.artifact_location == store["artifact_root"]
    assert not (tmp_path / "mlruns").exists() and not os.path.exists("mlruns.db")
    # tagged as model development, so MLflow's UI opens it on the runs (not the GenAI overview);
    # a kind someone set stays
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    c = tracking.client(store["uri"])
    other = tracking.ensure_experiment("tests-tracking-kind", store["uri"], None)
    c.set_experiment_tag(other, "mlflow.experimentKind", "genai_development")
    tracking.ensure_experiment("tests-tracking-kind", store["uri"], None)
    assert c.get_experiment(other).tags["mlflow.experimentKind"] == "genai_development"
    tracking.ensure_experiment("tests-tracking", store["uri"], None)  # the module's, active again


def test_disable_telemetry_sets_the_variable_mlflow_reads(monkeypatch):
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    tracking.disable_telemetry()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    from mlflow.telemetry.client import get_telemetry_client
    from mlflow.telemetry.utils import is_telemetry_disabled

    assert is_telemetry_disabled() and get_telemetry_client() is None


def test_metric_key():
    assert tracking.metric_key("map@10") == "map_at_10"
    assert tracking.metric_key("val/ndcg@5") == "val/ndcg_at_5"
    assert tracking.metric_key("auc take:x") == "auc take_x"
    assert tracking.metric_key("logloss_take") == "logloss_take"


def test_lineage_and_metrics_read_back(store):
    import mlflow

    with mlflow.start_run() as run:
        tracking.log_lineage(
            {"gold.training_examples": 3, "gold.user_features_daily": 12},
            uris={"gold.training_examples": "s3://lake/gold/training_examples"},
        )
        logged = tracking.log_dict_metrics(
            {"map@10": 0.21, "recall@50": np.float32(0.5), "bad": math.nan, "inf": math.inf,
             "none": None, "text": "x"},
            step=2, prefix="val/",
        )
    assert logged == {"val/map_at_10": 0.21, "val/recall_at_50": 0.5}
    c = tracking.client(store["uri"])
    data = c.get_run(run.info.run_id).data
    assert data.params["data.gold.training_examples.delta_version"] == "3"
    assert data.params["data.gold.user_features_daily.delta_version"] == "12"
    assert data.tags["data.gold.training_examples.uri"] == "s3://lake/gold/training_examples"
    assert data.metrics == {"val/map_at_10": 0.21, "val/recall_at_50": 0.5}
    # the table with a URI is a dataset input of the run: a Delta source at its version
    inputs = c.get_run(run.info.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.source_type) for i in inputs] == [("gold.training_examples", "delta_table")]
    source = json.loads(inputs[0].dataset.source)
    assert source["path"] == "s3://lake/gold/training_examples" and source["delta_table_version"] == 3
    assert [t.value for t in inputs[0].tags if t.key == "mlflow.data.context"] == ["training"]
    assert c.get_metric_history(run.info.run_id, "val/map_at_10")[0].step == 2


def _unique_violation():
    """The error the SQL store raises when a concurrent run inserted the same dataset first."""
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    engine = sqlalchemy.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE datasets (name TEXT, digest TEXT, UNIQUE (name, digest))")
        conn.exec_driver_sql("INSERT INTO datasets VALUES ('t', 'd')")
        try:
            conn.exec_driver_sql("INSERT INTO datasets VALUES ('t', 'd')")
        except sqlalchemy.exc.IntegrityError as exc:
            try:
                raise MlflowException(str(exc)) from exc
            except MlflowException as wrapped:
                return wrapped
    raise AssertionError("sqlite accepted a duplicate row")


def test_lineage_survives_a_concurrent_run_logging_the_same_dataset(store, monkeypatch):
    """Search trials log one table at once: the loser of the store's insert race retries."""
    import mlflow
    from mlflow.exceptions import MlflowException

    real, calls = mlflow.log_input, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise _unique_violation()
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", racing)
    with mlflow.start_run() as run:
        tracking.log_lineage({"gold.training_examples": 3},
                             uris={"gold.training_examples": "s3://lake/gold/training_examples"})
    assert len(calls) == 2
    inputs = tracking.client(store["uri"]).get_run(run.info.run_id).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["gold.training_examples"]

    def broken(*args, **kwargs):  # any other store error still surfaces, after one try
        calls.append(1)
        raise MlflowException("the store is read-only")

    calls.clear()
    monkeypatch.setattr(mlflow, "log_input", broken)
    with mlflow.start_run(), pytest.raises(MlflowException, match="read-only"):
        tracking.log_lineage({"gold.training_examples": 3},
                             uris={"gold.training_examples": "s3://lake/gold/training_examples"})
    assert len(calls) == 1


def test_logging_needs_an_active_run(store):
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        tracking.log_dict_metrics({"x": 1.0})


def test_pyfunc_scores_like_the_reference_model(store, logged):
    import mlflow

    info = logged["info"]
    assert info.registered_version == 1 and info.registered_model_name == "dlrm-tracking"
    frame = tiny_frame()
    expected = reference_probs(logged["model"], logged["encoders"], frame)
    assert expected.std() > 0.01  # the outputs differ from row to row

    pyfunc = mlflow.pyfunc.load_model("models:/dlrm-tracking/1")
    out = pyfunc.predict(frame.to_pandas())  # the frame MLflow checks against the signature
    assert list(out.columns) == ["score_take", "score_complete", "score_music_like"]
    np.testing.assert_allclose(out.to_numpy(), expected, atol=1e-5)

    np.testing.assert_allclose(tracking.load_scorer(info.model_uri)(frame), expected, atol=1e-5)
    # the signature names its inputs (the example's columns but ids), each optional, any type
    sig = mlflow.models.get_model_info("models:/dlrm-tracking/1").signature
    assert sig.inputs.input_names() == [c for c in frame.columns if c != "example_id"]
    assert not any(spec.required for spec in sig.inputs.inputs)


def test_torchscript_fast_path(store, logged, tmp_path):
    module, encoders, heads = tracking.load_torchscript("models:/dlrm-tracking/1", tmp_path / "dl")
    assert isinstance(module, torch.jit.ScriptModule)
    assert heads == ("take", "complete", "music_like")
    frame = tiny_frame()
    expected = reference_probs(logged["model"], logged["encoders"], frame)
    # chunks of 2 rows: other batch sizes than the trace's, and the row order kept across chunks
    np.testing.assert_allclose(serving.score_frame(module, encoders, frame, chunk_rows=2),
                               expected, atol=1e-5)
    names = {p.name for p in (tmp_path / "dl").rglob("*") if p.is_file()}
    assert {"dlrm.pt", "encoders.json", "model_config.json", "serving.py"} <= names
    assert not names & {"model.py", "train.py", "optim.py", "gold.py", "examples.py"}


def test_dates_arrive_as_strings_over_rest(logged):
    """REST serving sends JSON: dates as ISO strings (what MLflow's serving example holds)."""
    import mlflow

    frame = tiny_frame()
    as_json = frame.with_columns(pl.col("event_date", "release_date").cast(pl.Utf8) + "T00:00:00")
    out = mlflow.pyfunc.load_model(logged["info"].model_uri).predict(as_json.to_pandas())
    expected = reference_probs(logged["model"], logged["encoders"], frame)
    np.testing.assert_allclose(out.to_numpy(), expected, atol=1e-5)


def test_loads_without_training_code(store, logged, tmp_path):
    """A fresh interpreter that cannot import ml.model / ml.train / torchrec still scores."""
    frame = tiny_frame()
    frame.write_parquet(tmp_path / "frame.parquet")
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys

        BLOCKED = ("ml.model", "ml.train", "ml.optim", "ml.gold", "ml.examples", "torchrec", "dagster",
                   "simulator")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"blocked in this test: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        import mlflow, mlflow.pyfunc, numpy as np, pandas as pd

        mlflow.set_tracking_uri({store['uri']!r})
        mlflow.set_registry_uri({store['uri']!r})
        model = mlflow.pyfunc.load_model("models:/dlrm-tracking/1")
        out = model.predict(pd.read_parquet("frame.parquet"))
        np.save("scores.npy", out.to_numpy())
        import ml.serving
        try:
            import ml.model
            blocked = False
        except ImportError:
            blocked = True
        print(json.dumps({{
            "blocked": blocked,
            "serving": ml.serving.__file__,
            "loaded": sorted(m for m in sys.modules
                             if m == "ml" or m.startswith(("ml.", "torchrec"))),
        }}))
        """
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["blocked"]  # the guard works: the training code was really out of reach
    # the ml package came from the model's shipped code, not from the repository
    assert report["serving"].endswith(os.path.join("code", "ml", "serving.py"))
    assert not report["serving"].startswith(str(tracking.Path(tracking.__file__).parent))
    assert report["loaded"] == ["ml", "ml.batch", "ml.cooccurrence", "ml.features", "ml.serving"]
    expected = reference_probs(logged["model"], logged["encoders"], frame)
    np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), expected, atol=1e-5)


def test_registry_helpers(store, logged):
    name = "dlrm-tracking"
    assert tracking.get_alias_version("no-such-model", "champion") is None
    assert tracking.get_alias_version(name, "champion") is None
    tracking.set_alias(name, "champion", 1)
    assert int(tracking.get_alias_version(name, "champion").version) == 1
    metrics = tracking.version_run_metrics(name, 1, client_or_uri=store["uri"])
    assert metrics == {"map_at_10": 0.25, "auc_take": 0.7}
    version = tracking.register(logged["info"].model_uri, name)
    assert version == 2
    assert tracking.version_run_metrics(name, version) == metrics


def test_mismatched_encoders_are_refused(store):
    import mlflow

    model, config, encoders = tiny_model()
    bad = ModelConfig(sparse_cardinalities=[c + 1 for c in config.sparse_cardinalities],
                      n_dense=config.n_dense, embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8])
    with mlflow.start_run(), pytest.raises(ValueError, match="cardinalities"):
        tracking.log_scoring_model(state_dict=ReferenceDLRM(bad).state_dict(), model_config=bad,
                                   encoders=encoders)
