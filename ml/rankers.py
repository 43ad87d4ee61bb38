"""The rankers the evaluation compares, behind one structural interface: `Ranker`.

* `ModelRanker`: a DLRM (any `(dense, sparse) -> logits` function with its encoders; the take
  head ranks); the context-free ablation is a ModelRanker over a model trained without context.
* `PopularityRanker`: workouts of each class on that platform over the `popularity_days` before.
* the oracle (`simulator.oracle.OracleRanker`): the simulator's true preferences, only when a
  simulator made the data. It lives with the simulator, which imports nothing of `ml`: `Ranker`
  is a Protocol, so it is a ranker by its shape, without an adapter.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import polars as pl
import torch

from ml.context import usual_hour
from ml.factorized import FactorizedDLRM, factorized_score_matrix
from ml.features import Encoders
from ml.lists import ListBatch
from ml.pairs import PairEncoder, ScoreFn, score_matrix

# A user with no usual hour on a platform yet: the list averages the take probability over
# these hours (early, morning, midday, evening, night) instead of guessing one.
UNKNOWN_HOURS = (6, 9, 12, 18, 21)


class Ranker(Protocol):
    """Scores every (user, candidate) of a list batch: [users, candidates], higher = better.

    It reads the batch's day, platform, users (user_id + features at the day before) and
    classes (class_id + catalogue + popularity); `evaluate` ranks by the scores."""

    name: str

    def score(self, batch: ListBatch) -> np.ndarray:
        ...


class ModelRanker:
    """Ranks by a DLRM head (default: take) with the encoders it was trained with.

    A `score_fn` that is a dot-interaction DLRM (a module, e.g. the logged TorchScript one) or
    carries one (`torch_score_fn`) is scored factorized by side (`ml.factorized`, fp32: equal to
    the explicit pairs up to rounding, and faster); any other function scores explicit pairs."""

    def __init__(self, name: str, score_fn: ScoreFn, encoders: Encoders, *, head: int = 0,
                 heads: Sequence[str] = ("take", "complete", "music_like")) -> None:
        self.name, self.score_fn, self.encoders, self.head = name, score_fn, encoders, head
        self.heads = tuple(heads)
        self.pairs = PairEncoder(encoders)
        self.fast = _factorized(score_fn, encoders, head)

    def score(self, batch: ListBatch) -> np.ndarray:
        """log P(take) per (user, candidate), under the list context of the batch's dataset. A
        user with no usual hour on the platform (a new user, or a first visit to it) assumes the
        batch's default hour when it has one (mapped lists), else the take probability is
        averaged over UNKNOWN_HOURS."""
        classes = self.pairs.encode_classes(batch.classes.with_columns(pl.lit(batch.day).alias("event_date")))
        cs = self.fast.class_side(classes) if self.fast is not None else None
        hours = usual_hour(batch.users, batch.platform)
        if batch.default_hour is not None:
            hours = hours.fill_null(batch.default_hour)
        known = hours.is_not_null().to_numpy()
        out = np.empty(batch.relevant.shape, dtype=np.float64)

        def log_prob(users: pl.DataFrame, hour) -> np.ndarray:
            side = self.pairs.encode_users(batch.dataset.list_context(users, batch.platform, batch.day, hour))
            logits = (factorized_score_matrix(self.fast, self.pairs, side, classes, class_side=cs)
                      if self.fast is not None
                      else score_matrix(self.score_fn, self.pairs, side, classes, head=self.head))
            return -np.logaddexp(0.0, -logits.astype(np.float64))  # log sigmoid

        if known.any():
            out[known] = log_prob(batch.users.filter(pl.Series(known)), hours.filter(pl.Series(known)))
        if (~known).any():
            cold = batch.users.filter(pl.Series(~known))
            probs = np.mean([np.exp(log_prob(cold, h)) for h in UNKNOWN_HOURS], axis=0)
            out[~known] = np.log(np.maximum(probs, 1e-30))
        return out


class PopularityRanker:
    name = "popularity"

    def score(self, batch: ListBatch) -> np.ndarray:
        return np.broadcast_to(batch.popularity.astype(np.float64), batch.relevant.shape)


def torch_score_fn(model: torch.nn.Module) -> ScoreFn:
    """The model as a score function; it keeps the model (`fn.model`) so a ranker can factorize it."""
    model.eval()

    @torch.no_grad()
    def fn(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return model(dense, sparse)

    fn.model = model  # type: ignore[attr-defined]
    return fn


def _factorized(score_fn: ScoreFn, encoders: Encoders, head: int) -> FactorizedDLRM | None:
    """The factorized scorer of `score_fn`'s model's head `head` (its heads in the order of the
    state dict, which is the model's output order), or None: no model, or one that does not
    factorize (a DCN interaction, a two-tower)."""
    model = score_fn if isinstance(score_fn, torch.nn.Module) else getattr(score_fn, "model", None)
    if model is None:
        return None
    state = model.state_dict()
    heads = [k.split(".")[1] for k in state if k.startswith("heads.") and k.endswith(".weight")]
    if head >= len(heads):
        return None
    try:
        return FactorizedDLRM(state, encoders.spec, heads, head=heads[head], dtype=torch.float32)
    except (ValueError, KeyError):
        return None


__all__ = ["UNKNOWN_HOURS", "ModelRanker", "PopularityRanker", "Ranker", "torch_score_fn"]
