"""The scoring side of a logged model: TorchScript DLRM + saved Encoders, as an MLflow pyfunc.

This file travels with every logged model (with `ml/__init__.py`, `ml/batch.py`,
`ml/cooccurrence.py` and `ml/features.py`, see `ml.tracking.log_scoring_model`), so a model loads
and scores with torch, polars, numpy and pandas only: no torchrec, no training code, no Dagster,
no simulator. Keep its project imports to `ml.features` and `ml.batch` (and what `ml.features`
imports, `ml.cooccurrence`); anything else would not exist where it is loaded.

Artifacts of a logged model (keys of `context.artifacts`, file names inside the model):
    dlrm          -> dlrm.pt            plain-PyTorch DLRM as TorchScript: (dense, sparse) -> logits
    encoders      -> encoders.json      `Encoders.to_json()` (spec, vocabularies, statistics)
    model_config  -> model_config.json  the ModelConfig as a dict (heads, in logit order)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl
import torch

from ml.features import Encoders

ARTIFACT_FILES = {
    "dlrm": "dlrm.pt",
    "encoders": "encoders.json",
    "model_config": "model_config.json",
}
SCORE_PREFIX = "score_"
# Rows per forward pass: bounds memory when scoring millions of candidates.
DEFAULT_CHUNK_ROWS = 131_072
# Columns `ml.features.prepare` reads as dates.
DATE_COLUMNS = ("event_date", "release_date")


def score_columns(heads: Sequence[str]) -> list[str]:
    """Output column per head: `score_take`, `score_complete`, `score_music_like`."""
    return [f"{SCORE_PREFIX}{h}" for h in heads]


def to_polars(data: Any) -> pl.DataFrame:
    """pandas / polars / dict-of-columns / list-of-rows -> polars.

    pandas NaN becomes null (`nan_to_null`): pandas has no null in float or int columns with
    missing values, and the Encoders treat null as "missing" but reject NaN as corrupt data.
    """
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pd.DataFrame):
        return pl.from_pandas(data, nan_to_null=True)
    if isinstance(data, (dict, list)):
        return pl.DataFrame(data, strict=False)
    raise TypeError(f"cannot score input of type {type(data).__name__}: pass a DataFrame")


def coerce_dates(frame: pl.DataFrame) -> pl.DataFrame:
    """Date columns back to `pl.Date`: JSON (REST serving) sends them as strings, pandas as
    datetimes; `prepare()` subtracts them as dates."""
    exprs = []
    for name in DATE_COLUMNS:
        if name not in frame.columns:
            continue
        dtype = frame.schema[name]
        if dtype == pl.Utf8:
            exprs.append(pl.col(name).str.slice(0, 10).str.to_date("%Y-%m-%d"))
        elif isinstance(dtype, pl.Datetime):
            exprs.append(pl.col(name).dt.date())
    return frame.with_columns(exprs) if exprs else frame


def load_module(path: str | Path) -> torch.jit.ScriptModule:
    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return module


def load_heads(path: str | Path) -> tuple[str, ...]:
    return tuple(json.loads(Path(path).read_text())["heads"])


def score_frame(
    module: torch.jit.ScriptModule | torch.nn.Module,
    encoders: Encoders,
    frame: pl.DataFrame,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Sigmoid probabilities float32 [n, n_heads], in the frame's row order, chunk by chunk."""
    n = frame.height
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, max(n, 1), chunk_rows):
            batch = encoders.transform(frame.slice(start, chunk_rows))
            out.append(torch.sigmoid(module(batch.dense, batch.sparse)).numpy())
    return np.concatenate(out, axis=0)


class DLRMScorer(mlflow.pyfunc.PythonModel):
    """pyfunc model: candidate frame -> one sigmoid-probability column per head.

    The input is the joined frame `ml.examples.read_examples` returns, as pandas: MLflow checks it
    against the signature's named inputs (each optional, any type); extra columns are ignored,
    missing feature columns raise `FeatureError`. `ml.tracking.load_scorer` takes polars too.
    """

    def __getstate__(self) -> dict:
        # Pickled into the model without what load_context loads (MLflow may call load_context
        # on this very instance before pickling it; a ScriptModule does not pickle).
        return {}

    def load_context(self, context: Any) -> None:
        self.module = load_module(context.artifacts["dlrm"])
        self.encoders = Encoders.load(context.artifacts["encoders"])
        self.heads = load_heads(context.artifacts["model_config"])

    # The pd.DataFrame hint is one MLflow infers no schema from (the signature is given when
    # the model is logged); without a hint MLflow warns on every log.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """pandas frame -> pandas frame `score_<head>` per head, same row order."""
        frame = coerce_dates(to_polars(model_input))
        probs = score_frame(self.module, self.encoders, frame)
        return pd.DataFrame(probs, columns=score_columns(self.heads))
