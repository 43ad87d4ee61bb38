"""Thin, typed helpers over MLflow: local store, lineage, metrics, the scoring model, aliases.

Why these exist:
* one place that decides where MLflow writes (`<data_dir>/mlflow/`: a SQLite store and an
  artifact folder), so nothing lands in `./mlruns` of whatever the cwd is, or under `~`;
* telemetry off before MLflow is imported here (`disable_telemetry`);
* a logged model that scores without the training code: a TorchScript export of the plain-PyTorch
  `ReferenceDLRM` + the Encoders JSON + `ml/serving.py` as the pyfunc (see `log_scoring_model`);
* registry look-ups that answer None instead of raising when a model or alias does not exist;
* the run API the rest of `ml` uses (`start_run`, `log_params`, `log_text`, `log_artifact`,
  `set_tag`), so nothing outside this module imports mlflow itself.

`mlflow` is imported lazily (inside the functions), after `disable_telemetry()`: `import mlflow`
itself creates a telemetry client (and writes an installation id under `~/.config`) unless
telemetry is already disabled in the environment.

Over 400 lines: it is the one module that imports mlflow (telemetry off first); the scoring
model and the run API share that guarded import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl
import torch

from ml.features import Encoders
from ml.metrics import finite
from ml.model import ModelConfig, build_model

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# Environment variables MLflow 3.17 reads to turn telemetry off (mlflow/telemetry/utils.py,
# `is_telemetry_disabled`): MLFLOW_DISABLE_TELEMETRY=true, or DO_NOT_TRACK=true (only the literal
# "true", case-insensitive; "1" does not count).
TELEMETRY_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true"}

# The project files a logged model ships with: the pyfunc and what it imports, nothing else.
SERVING_CODE = ("__init__.py", "batch.py", "cooccurrence.py", "features.py", "serving.py")

# Valid MLflow metric/param names: alphanumerics, _ - . / space (and ':' off Windows).
_INVALID_KEY_CHARS = re.compile(r"[^\w./\- ]")


def disable_telemetry() -> None:
    """Turn MLflow telemetry off (unless the environment says otherwise explicitly).

    Called by every helper here before it touches mlflow. When mlflow was already imported with
    telemetry on, its client is re-initialized so that it sees the new setting.
    """
    already_set = all(os.environ.get(k) == v for k, v in TELEMETRY_ENV.items())
    for key, value in TELEMETRY_ENV.items():
        os.environ.setdefault(key, value)
    if not already_set and "mlflow" in sys.modules:
        try:
            from mlflow.telemetry.client import set_telemetry_client

            set_telemetry_client()  # drops the client when telemetry is now disabled
        except Exception:  # noqa: BLE001 - telemetry plumbing must never break tracking
            pass


def _mlflow():
    disable_telemetry()
    import mlflow

    return mlflow


# ---------------------------------------------------------------------------------------------
# Store location


def default_tracking_uri(data_dir: str | Path) -> str:
    """`sqlite:////abs/<data_dir>/mlflow/mlflow.db` (the folder is created)."""
    folder = Path(data_dir).expanduser().resolve() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def default_artifact_root(data_dir: str | Path) -> str:
    """`file:///abs/<data_dir>/mlflow/artifacts`, for `create_experiment(artifact_location=...)`."""
    folder = Path(data_dir).expanduser().resolve() / "mlflow" / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def client(client_or_uri: "MlflowClient | str | None" = None) -> "MlflowClient":
    """An MlflowClient: the given one, one for a tracking URI (registry on the same store),
    or one on the process-wide URIs (`ensure_experiment` sets them)."""
    mlflow = _mlflow()
    if isinstance(client_or_uri, mlflow.MlflowClient):
        return client_or_uri
    if client_or_uri is None:
        return mlflow.MlflowClient()
    return mlflow.MlflowClient(tracking_uri=client_or_uri, registry_uri=client_or_uri)


# MLflow 3's UI opens an experiment by its kind: without this tag it shows the GenAI overview
# (traces, tokens) instead of the training runs
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(name: str, tracking_uri: str, artifact_root: str | None = None) -> str:
    """Point MLflow (tracking and registry) at `tracking_uri`; create `name` if missing.

    Returns the experiment id and makes it the active experiment. `artifact_root` is used only
    when the experiment is created (MLflow fixes an experiment's artifact location for life).
    The experiment is tagged as model development (`EXPERIMENT_KIND`) unless it has a kind.
    """
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    c = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        experiment_id = c.create_experiment(name, artifact_location=artifact_root)
    else:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        experiment_id = exp.experiment_id
    if exp is None or EXPERIMENT_KIND[0] not in exp.tags:
        c.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


# ---------------------------------------------------------------------------------------------
# Params and metrics


def metric_key(name: str) -> str:
    """A name MLflow accepts: `map@10` -> `map_at_10`; other invalid characters -> `_`.

    MLflow rejects '@' (and ':' on Windows) in metric and param names.
    """
    return _INVALID_KEY_CHARS.sub("_", name.replace("@", "_at_"))


def _active_run():
    mlflow = _mlflow()
    run = mlflow.active_run()
    if run is None:
        # mlflow.log_* would silently start a stray run: refuse instead
        raise RuntimeError("no active MLflow run: call inside `with mlflow.start_run():`")
    return run


def start_run(*, run_id: str | None = None, experiment_id: str | None = None,
              run_name: str | None = None, tags: Mapping[str, str] | None = None):
    """`mlflow.start_run`: a new run (in `experiment_id`, named, tagged), or `run_id` resumed.
    Use as a context manager; the run is `.info.run_id`."""
    return _mlflow().start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name,
                               tags=dict(tags) if tags else None)


def log_params(params: Mapping[str, Any]) -> None:
    """Params of the active run; lists, tuples, sets and dicts as JSON."""
    mlflow = _mlflow()
    _active_run()
    mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict, tuple, set)) else v
                       for k, v in params.items()})


def log_text(text: str, artifact_file: str) -> None:
    """A text artifact of the active run (e.g. "evaluation/report.md")."""
    mlflow = _mlflow()
    _active_run()
    mlflow.log_text(text, artifact_file)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """A local file as an artifact of the active run, under `artifact_path`."""
    mlflow = _mlflow()
    _active_run()
    mlflow.log_artifact(str(path), artifact_path)


def set_tag(key: str, value: str) -> None:
    """A tag on the active run."""
    mlflow = _mlflow()
    _active_run()
    mlflow.set_tag(key, value)


def log_lineage(
    table_versions: Mapping[str, int], uris: Mapping[str, str] | None = None
) -> None:
    """Record which Delta version of each input table the run read.

    params `data.<table>.delta_version`; tags `data.<table>.uri` where a URI is given, and the
    table as an MLflow dataset input (a Delta source with its version: the run page's
    "Datasets"), described, not loaded.
    """
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    mlflow = _mlflow()
    _active_run()
    params = {metric_key(f"data.{t}.delta_version"): int(v) for t, v in table_versions.items()}
    if params:
        mlflow.log_params(params)
    for table, uri in (uris or {}).items():
        mlflow.set_tag(metric_key(f"data.{table}.uri"), str(uri))
        if table in table_versions:
            source = DeltaDatasetSource(path=str(uri), delta_table_version=int(table_versions[table]))
            _log_input(mlflow, MetaDataset(source, name=table))


def _log_input(mlflow: Any, dataset: Any, attempts: int = 3) -> None:
    """`mlflow.log_input`, again when a concurrent run inserted the same dataset first.

    The SQL store looks a dataset up by (experiment, name, digest) and inserts it when absent:
    two runs of one experiment logging the same table at once (the trials of a search) race,
    and the loser gets a UNIQUE-constraint error. Its retry finds the winner's row and links it.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context="training")
            return
        except MlflowException as exc:
            if attempt == attempts - 1 or not _is_unique_violation(exc):
                raise


def _is_unique_violation(exc: BaseException) -> bool:
    import sqlalchemy.exc

    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return any(isinstance(e, sqlalchemy.exc.IntegrityError) for e in chain)


def log_dict_metrics(
    metrics: Mapping[str, Any], step: int | None = None, prefix: str = ""
) -> dict[str, float]:
    """Log the finite numeric values under `metric_key(prefix + name)`; return what was logged.

    NaN / inf / None / non-numbers are skipped (MLflow would store NaN, which breaks comparisons).
    """
    mlflow = _mlflow()
    _active_run()
    logged = {}
    for name, value in metrics.items():
        v = finite(value)
        if v is not None:
            logged[metric_key(f"{prefix}{name}")] = v
    if logged:
        mlflow.log_metrics(logged, step=step)
    return logged


# ---------------------------------------------------------------------------------------------
# The scoring model


@dataclass(frozen=True)
class ScoringModelInfo:
    """Where a logged scoring model lives. `model_uri` loads it with `mlflow.pyfunc.load_model`."""

    model_uri: str
    model_id: str | None
    run_id: str | None
    registered_model_name: str | None
    registered_version: int | None


_ENTRY_CODE = '''"""MLflow models-from-code entry point; the scorer itself is code/ml/serving.py."""
import mlflow.models

from ml.serving import DLRMScorer

mlflow.models.set_model(DLRMScorer())
'''


def _pip_requirements() -> list[str]:
    reqs = []
    for dist in ("torch", "polars", "numpy", "pandas"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:  # pragma: no cover
            reqs.append(dist)
    return reqs


def _example_inputs(
    config: ModelConfig, batch: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(batch, config.n_dense, generator=g)
    sparse = torch.stack(
        [torch.randint(-1 if k > 1 else 0, c, (batch,), generator=g)  # a bag's slot may be unused
         for c, k in zip(config.sparse_cardinalities, config.sparse_slots) for _ in range(k)], dim=1
    )
    return dense, sparse


def export_torchscript(state_dict: Mapping[str, torch.Tensor], model_config: ModelConfig):
    """The plain-PyTorch DLRM with these weights, traced to TorchScript (eval mode, CPU).

    Tracing (not scripting): ReferenceDLRM indexes a ModuleDict by loop variable, which
    `torch.jit.script` rejects. The trace is checked against eager outputs on another batch size,
    so a shape baked into the graph would be caught here, not in production.
    """
    model = build_model(model_config, "reference")  # the DLRM, or the two-tower (pair scores)
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    model.load_state_dict(cpu_state, strict=True)
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, _example_inputs(model_config, 4, 0), check_trace=False)
        dense, sparse = _example_inputs(model_config, 7, 1)
        if not torch.allclose(traced(dense, sparse), model(dense, sparse), atol=1e-6, rtol=1e-5):
            raise RuntimeError("TorchScript export disagrees with the eager model")
    return traced


def _check_compatible(model_config: ModelConfig, encoders: Encoders) -> None:
    if len(encoders.spec.dense) != model_config.n_dense:
        raise ValueError(
            f"encoders have {len(encoders.spec.dense)} dense features, model {model_config.n_dense}"
        )
    if encoders.cardinalities() != list(model_config.sparse_cardinalities):
        raise ValueError(
            f"encoder cardinalities {encoders.cardinalities()} != model "
            f"{model_config.sparse_cardinalities}"
        )
    if encoders.spec.slots() != list(model_config.sparse_slots):
        raise ValueError(f"encoder slots {encoders.spec.slots()} != model {model_config.sparse_slots}")


# columns of an example frame that are not the scorer's inputs (ids, labels, bookkeeping)
_NOT_INPUTS = ("example_id", "workout_id", "sample_index", "is_negative")


def _signature(heads, input_columns: Sequence[str] | None):
    """Named inputs (the example frame's columns, each optional and of any type: a few rows
    would fix dtypes such as int vs float or all-null columns too narrowly, and a mapped dataset
    leaves some out; the Encoders validate the input: missing feature columns, NaN) and one
    float output per head."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    from ml.serving import score_columns

    outputs = Schema([ColSpec("float", c) for c in score_columns(heads)])
    names = [c for c in (input_columns or ()) if c not in _NOT_INPUTS and not c.startswith("label_")]
    inputs = Schema([ColSpec(AnyType(), c, required=False) for c in names]) if names else None
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_scoring_model(
    *,
    state_dict: Mapping[str, torch.Tensor],
    model_config: ModelConfig,
    encoders: Encoders,
    artifact_path: str = "model",
    registered_model_name: str | None = None,
    input_example: pl.DataFrame | None = None,
    input_columns: Sequence[str] | None = None,
) -> ScoringModelInfo:
    """Log a pyfunc model that scores without the training code (and register it if named).

    Inside: `dlrm.pt` (TorchScript of ReferenceDLRM with `state_dict`; a TorchRec state dict has
    the same keys), `encoders.json`, `model_config.json`, and as code only `ml/__init__.py`,
    `ml/batch.py`, `ml/cooccurrence.py`, `ml/features.py`, `ml/serving.py`. Requirements are
    given explicitly (torch, polars, numpy, pandas) so MLflow does not infer them by importing
    things.
    Logged to the active run (MLflow 3 also accepts none: then the model has no run).
    """
    mlflow = _mlflow()
    from ml import serving

    _check_compatible(model_config, encoders)
    traced = export_torchscript(state_dict, model_config)
    with tempfile.TemporaryDirectory(prefix="scoring-model-") as tmp:
        tmpdir = Path(tmp)
        files = {key: tmpdir / name for key, name in serving.ARTIFACT_FILES.items()}
        torch.jit.save(traced, str(files["dlrm"]))
        encoders.save(files["encoders"])
        files["model_config"].write_text(json.dumps(asdict(model_config), sort_keys=True))

        code = tmpdir / "code" / "ml"
        code.mkdir(parents=True)
        src = Path(serving.__file__).resolve().parent
        for name in SERVING_CODE:
            shutil.copy2(src / name, code / name)

        # models-from-code: MLflow runs this file at load time (with code/ on sys.path), so the
        # scorer is built from the shipped ml/serving.py, never unpickled.
        entry = tmpdir / "dlrm_scorer.py"
        entry.write_text(_ENTRY_CODE)

        example = input_example
        if isinstance(example, pl.DataFrame):
            example = example.to_pandas()
        info = mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=str(entry),
            artifacts={key: str(path) for key, path in files.items()},
            code_paths=[str(code)],
            pip_requirements=_pip_requirements(),
            registered_model_name=registered_model_name,
            input_example=example,
            signature=_signature(model_config.heads, input_columns if input_columns is not None
                                 else (list(example.columns) if example is not None else None)),
        )
    version = getattr(info, "registered_model_version", None)
    return ScoringModelInfo(
        model_uri=info.model_uri,
        model_id=getattr(info, "model_id", None),
        run_id=info.run_id,
        registered_model_name=registered_model_name,
        registered_version=int(version) if version is not None else None,
    )


def load_scorer(model_uri: str) -> Callable[[pl.DataFrame], np.ndarray]:
    """`mlflow.pyfunc.load_model` wrapped as frame -> float32 [n, n_heads] probabilities."""
    mlflow = _mlflow()
    import mlflow.pyfunc  # noqa: F401 - the submodule

    model = mlflow.pyfunc.load_model(model_uri)

    def score(frame: pl.DataFrame) -> np.ndarray:
        # pandas: MLflow enforces the named input schema on pandas frames (not on polars)
        out = model.predict(frame.to_pandas() if isinstance(frame, pl.DataFrame) else frame)
        cols = [c for c in out.columns if c.startswith("score_")]
        return out[cols].to_numpy(dtype=np.float32)

    return score


def load_model_config(model_uri: str, *, tracking_uri: str | None = None) -> ModelConfig:
    """The logged model's `ModelConfig` (architecture, tables, heads)."""
    mlflow = _mlflow()
    from ml import serving

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="model-config-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        text = (local / "artifacts" / serving.ARTIFACT_FILES["model_config"]).read_text()
    return ModelConfig(**json.loads(text))


def load_torchscript(
    model_uri: str, dst_path: str | Path | None = None, *, tracking_uri: str | None = None
) -> tuple[torch.jit.ScriptModule, Encoders, tuple[str, ...]]:
    """The fast path for batch scoring: (TorchScript module, Encoders, heads), no pandas.

    Use with `ml.serving.score_frame(module, encoders, frame)` on millions of rows.
    Artifacts are downloaded to `dst_path` (a temp folder when None; the files are loaded
    into memory before it is removed). `tracking_uri`: the store that resolves `model_uri`
    (set process-wide, as in a Ray actor that has not set one), else the current one.
    """
    mlflow = _mlflow()
    from ml import serving

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)

    def _load(folder: str) -> tuple[torch.jit.ScriptModule, Encoders, tuple[str, ...]]:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        art = local / "artifacts"
        return (
            serving.load_module(art / serving.ARTIFACT_FILES["dlrm"]),
            Encoders.load(art / serving.ARTIFACT_FILES["encoders"]),
            serving.load_heads(art / serving.ARTIFACT_FILES["model_config"]),
        )

    if dst_path is not None:
        Path(dst_path).mkdir(parents=True, exist_ok=True)
        return _load(str(dst_path))
    with tempfile.TemporaryDirectory(prefix="scoring-model-") as tmp:
        return _load(tmp)


# ---------------------------------------------------------------------------------------------
# Registry


def register(model_uri: str, name: str) -> int:
    """Register `model_uri` under `name` (created if missing) on the process-wide registry."""
    mlflow = _mlflow()
    return int(mlflow.register_model(model_uri, name).version)


def set_alias(name: str, alias: str, version: int, *, client_or_uri=None) -> None:
    """Point `alias` at `version` (moving it off any other version of `name`)."""
    client(client_or_uri).set_registered_model_alias(name, alias, str(version))


def _is_missing(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
    )


def get_alias_version(name: str, alias: str, *, client_or_uri=None) -> "ModelVersion | None":
    """The version `alias` points at; None when the model or the alias does not exist."""
    c = client(client_or_uri)
    try:
        return c.get_model_version_by_alias(name, alias)
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise


def version_run_metrics(name: str, version: int, *, client_or_uri=None) -> dict[str, float]:
    """Latest metrics of the run that produced `version` (keys as logged, i.e. `metric_key`ed).

    A version logged outside a run falls back to its LoggedModel's metrics (MLflow 3).
    """
    c = client(client_or_uri)
    mv = c.get_model_version(name, str(version))
    if mv.run_id:
        return {k: float(v) for k, v in c.get_run(mv.run_id).data.metrics.items()}
    model_id = getattr(mv, "model_id", None)
    if model_id:
        return {m.key: float(m.value) for m in (c.get_logged_model(model_id).metrics or [])}
    return {}
