"""The model assets' metadata as people read it in the Dagster UI.

Figures are rounded to 4 significant digits (`for_people`); the exact values live in MLflow
(the model's run) and, for the promotion gate, in the evaluation's `gate` entry. Entries that do
not apply (no champion, no oracle) are left out rather than shown as NaN or -1, so the asset's
Plots tab draws only real series. The plots are Markdown images served by the MLflow UI (short
enough for the asset page to show inline); the report keeps them embedded as well.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

import dagster as dg

from ml.metrics import format_ratio
from ml.workflow import Evaluation, Tracking

SIGNIFICANT = 4
PLOTS = {"map_at_k": "MAP@K on the held-out days", "calibration": "calibration of the take head"}


def for_people(x: Any) -> float | None:
    """`x` to 4 significant digits (None for NaN / missing: the entry is then left out)."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return None
    return 0.0 if x == 0 else round(x, SIGNIFICANT - 1 - int(math.floor(math.log10(abs(x)))))


def figures(values: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    """Rounded float entries, without the ones that do not apply."""
    return {k: dg.MetadataValue.float(r) for k, v in values.items() if (r := for_people(v)) is not None}


def artifact_url(tr: Tracking, run_id: str, path: str) -> str:
    """A run's artifact file as the MLflow UI serves it (an image a page can show)."""
    return f"{tr.ui_url.rstrip('/')}/get-artifact?path={quote(path)}&run_uuid={run_id}"


def plot_entries(tr: Tracking, run_id: str, plots: dict[str, str]) -> dict[str, dg.MetadataValue]:
    """One inline image per plot, from the model's MLflow run (`evaluation/<file>`)."""
    out = {}
    for name, path in plots.items():
        file = path.replace("\\", "/").rsplit("/", 1)[-1]
        out[f"plot: {PLOTS.get(name, name)}"] = dg.MetadataValue.md(
            f"![{PLOTS.get(name, name)}]({artifact_url(tr, run_id, f'evaluation/{file}')})")
    return out


def gate_inputs(ev: Evaluation, *, lists: int, min_lists: int, champion_version: int | None,
                unscored: int | None) -> dict:
    """What `champion_model` decides on, exact: MAP@10 of the candidate and the champion, the
    ratios with their intervals, the lists."""
    r = ev.result
    return {
        "map@10": r.metric("candidate", "map@10"),
        "map@10 champion": r.metric("champion", "map@10") if champion_version else None,
        "champion_version": champion_version,
        "champion_unscored_version": unscored,
        "lists": lists,
        "min_lists": min_lists,
        **{f"vs {other}": {k: ev.comparisons[other][k] for k in ("ratio", "low", "high")}
           for other in ("popularity", "champion") if other in ev.comparisons},
    }


def evaluation_metadata(ev: Evaluation, *, oracle: bool, champion_version: int | None,
                        unscored: int | None, peers: dict) -> dict[str, Any]:
    """The evaluation's figures and comparisons, rounded, only those that apply."""
    r = ev.result
    rankers = ["popularity", "ablation", "fm", *(["oracle"] if oracle else []),
               *(["champion"] if champion_version else []), *peers]
    return {
        "champion": (f"v{champion_version} (scored on the same lists)" if champion_version else
                     f"v{unscored}: not comparable on these days" if unscored else "none yet"),
        **figures({"map@10": r.metric("candidate", "map@10"),
                   **{f"map@10 {n}": r.metric(n, "map@10") for n in rankers},
                   **{f"vs {n}": ev.ratio("candidate", n) for n in rankers if n not in peers},
                   "new-class slots in top 10": r.new_class_share["candidate"],
                   "coverage@10": r.coverage["candidate"],
                   "auc_take": ev.heads["candidate"]["auc_take"],
                   "ece_take": ev.heads["candidate"]["ece_take"]}),
        # each ratio with its paired bootstrap 95% interval (users resampled)
        **{f"vs {other}, 95% CI": format_ratio(c) for other, c in ev.comparisons.items()},
        "users": next(iter(ev.comparisons.values()))["users"] if ev.comparisons else 0,
        **{f"{p} skipped": why for p, why in ev.skipped.items()},
        "has_oracle": oracle,
    }


__all__ = ["evaluation_metadata", "figures", "for_people", "gate_inputs", "plot_entries"]
