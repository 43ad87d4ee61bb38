"""The promotion gate: does a newly trained model replace the champion?

`decide` is pure (metrics in, decision out) so every rule is unit-testable; `apply` writes the
decision to the MLflow registry as aliases and version tags. Rules, in order:

1. a failed blocking check (data or model quality) blocks promotion, even of a first model;
2. a candidate without a finite value of the gate metric is not promoted (evaluation broke);
   nor one evaluated on fewer lists than `min_lists` (the evaluation cannot conclude);
3. no champion yet: the candidate becomes the first champion only if it beats popularity with
   the lower bound of the paired bootstrap interval of their ratio above 1 (`vs_popularity`);
4. a champion without a finite value of the metric is not replaced automatically (a human
   looks: silently replacing a model we cannot score would hide the failure);
5. otherwise the candidate must be strictly better: candidate > champion * (1 + min_relative_gain).
   Ties keep the champion. Metrics are higher-is-better. A point gain is enough (the newer
   model wins what noise cannot tell apart); where the ratio's interval includes 1 the reason
   says "is above", not "beats".

The champion's metric must come from the SAME evaluation set as the candidate's: the caller
scores the champion model on the candidate's evaluation data. Metrics logged by the champion's
own training run were computed on an older evaluation set and are not comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from ml.metrics import finite, format_ratio
from ml.tracking import client as _client
from ml.tracking import get_alias_version, metric_key

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    alias: str  # "champion" when promoted, else "challenger"
    reason: str  # a sentence with the numbers, for humans (stored as a version tag)
    metric: str
    candidate: float
    champion: float | None


def _lookup(metrics: Mapping[str, float] | None, metric: str) -> float:
    """The metric by its name or its MLflow key (`map@10` or `map_at_10`); NaN when absent."""
    if not metrics:
        return math.nan
    for key in (metric, metric_key(metric)):
        if key in metrics and metrics[key] is not None:
            try:
                return float(metrics[key])
            except (TypeError, ValueError):
                return math.nan
    return math.nan


def decide(
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    *,
    metric: str = "map@10",
    min_relative_gain: float = 0.0,
    failed_checks: Sequence[str] = (),
    champion_version: int | None = None,
    vs_popularity: Mapping[str, float] | None = None,
    vs_champion: Mapping[str, float] | None = None,
    lists: int | None = None,
    min_lists: int = 0,
) -> PromotionDecision:
    """Apply the rules above. `champion_metrics` None means there is no champion yet;
    `champion_version` only makes the reason more precise. `vs_popularity` / `vs_champion`: the
    candidate's ratio to each with its interval (`ml.metrics.paired_bootstrap_ratio`: ratio,
    low, high); None skips rule 3's interval (a caller without one); `lists`: how many lists the
    evaluation ranked."""
    cand = _lookup(candidate_metrics, metric)
    champ = None if champion_metrics is None else _lookup(champion_metrics, metric)
    who = f"champion v{champion_version}" if champion_version is not None else "the champion"

    def no(reason: str) -> PromotionDecision:
        return PromotionDecision(False, CHALLENGER, reason, metric, cand, champ)

    if failed_checks:
        return no(f"blocking checks failed: {', '.join(failed_checks)}")
    if not math.isfinite(cand):
        return no(f"candidate has no finite {metric} ({cand}); cannot judge it")
    if lists is not None and lists < min_lists:
        return no(f"evaluated on {lists} lists, fewer than the {min_lists} needed to conclude")
    if champion_metrics is None:
        if vs_popularity is not None:
            low = finite(vs_popularity.get("low"))
            if low is None or low <= 1.0:
                return no(f"first model: {metric} {cand:.4f} vs popularity "
                          f"{format_ratio(vs_popularity)}: the interval's lower bound is not above 1")
            return PromotionDecision(
                True, CHAMPION, f"first model: {metric} {cand:.4f} beats popularity "
                                f"{format_ratio(vs_popularity)} (lower bound above 1)",
                metric, cand, None)
        return PromotionDecision(
            True, CHAMPION, f"first model: no champion yet ({metric} {cand:.4f})",
            metric, cand, None,
        )
    if not math.isfinite(champ):
        return no(
            f"{who} has no finite {metric} on this evaluation set ({champ}); "
            "not replacing it automatically"
        )
    threshold = champ * (1.0 + min_relative_gain)
    gain = f" by more than {min_relative_gain:.1%}" if min_relative_gain else ""
    if vs_champion is not None:
        gain += f" (ratio {format_ratio(vs_champion)})"
    if cand > threshold:
        # a ratio whose interval includes 1 is not shown to be a gain: say so, not "beats"
        low = None if vs_champion is None else finite(vs_champion.get("low"))
        unsure = vs_champion is not None and (low is None or low <= 1.0)
        verb = "is above" if unsure else "beats"
        note = "; the interval includes 1: promoted on the point gain (rule 5)" if unsure else ""
        return PromotionDecision(
            True,
            CHAMPION,
            f"{metric} {cand:.4f} {verb} {who} {champ:.4f}{gain} on the same evaluation set{note}",
            metric,
            cand,
            champ,
        )
    return no(
        f"{metric} {cand:.4f} does not beat {who} {champ:.4f}{gain} on the same evaluation set"
    )


def apply(
    client_or_tracking_uri: "MlflowClient | str | None",
    name: str,
    version: int,
    decision: PromotionDecision,
    *,
    champion_version: int | None,
) -> None:
    """Write the decision: alias `champion` (promoted) or `challenger` (not) on `version`, and
    tags `promotion_decision` / `promotion_reason` / `promotion_metric` on it.

    `champion_version` is the champion the decision was made against (None: there was none);
    if `champion` points elsewhere now, another promotion happened meanwhile and this raises
    rather than overwrite it. A previous champion gets tag `superseded_by=<version>`.
    `champion` is never moved when `decision.promote` is False.
    """
    c = _client(client_or_tracking_uri)
    current = get_alias_version(name, CHAMPION, client_or_uri=c)
    current_version = int(current.version) if current is not None else None
    if decision.promote and current_version != champion_version:
        raise RuntimeError(
            f"{name}: champion is v{current_version}, but the decision was made against "
            f"v{champion_version}; decide again"
        )
    v = str(version)
    outcome = "promoted" if decision.promote else "rejected"
    c.set_model_version_tag(name, v, "promotion_decision", outcome)
    c.set_model_version_tag(name, v, "promotion_reason", decision.reason)
    c.set_model_version_tag(name, v, "promotion_metric", decision.metric)
    if decision.promote:
        c.set_registered_model_alias(name, CHAMPION, v)
        if current_version is not None and current_version != version:
            c.set_model_version_tag(name, str(current_version), "superseded_by", v)
    else:
        c.set_registered_model_alias(name, CHALLENGER, v)
