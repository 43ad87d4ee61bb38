"""The evaluation as people read it: markdown tables and plots of an `EvalResult`."""

from __future__ import annotations

import math
from typing import Sequence

import polars as pl

from ml.evaluation import EvalResult
from ml.features import PLATFORMS
from ml.metrics import format_ratio


def comparison_table(result: EvalResult, *, reference: str | None = None,
                     columns: Sequence[str] = ("map@10", "ndcg@10", "recall@10", "hit@10", "map@20"),
                     candidate: str | None = None, comparisons: dict[str, dict] | None = None,
                     skipped: dict[str, str] | None = None) -> str:
    """Markdown: one row per ranker (overall), with the ratio of MAP@10 to `reference` and, given
    `comparisons` (ranker -> `EvalResult.compare(candidate, ranker)`), the candidate's MAP@10
    over each ranker's with its paired bootstrap 95% interval. `skipped` rankers (name -> why)
    get a row that says why, never figures."""
    s = result.summary.filter(pl.col("platform") == "all")
    columns = [c for c in columns if c in s.columns]
    ref = result.metric(reference, "map@10") if reference else float("nan")
    head = ["ranker", "lists", *columns, "coverage@10", "new-class slots", "recall@10 new classes",
            "MAP@10 cold users"]
    if reference:
        head.append(f"MAP@10 / {reference}")
    if comparisons is not None:
        head.append(f"{candidate} / ranker, 95% paired bootstrap")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in s.sort(pl.col("map@10"), descending=True).iter_rows(named=True):
        name = row["ranker"]
        cells = [name, str(row["lists"]), *[f"{row[c]:.4f}" for c in columns],
                 f"{result.coverage[name]:.3f}", f"{result.new_class_share[name]:.3f}",
                 _fmt(row["recall@10_new_classes"]), _fmt(row["map@10_cold_users"])]
        if reference:
            cells.append(f"{row['map@10'] / ref:.2f}x" if ref and ref > 0 else "n/a")
        if comparisons is not None:
            cells.append("-" if name == candidate else format_ratio(comparisons.get(name, {})))
        lines.append("| " + " | ".join(cells) + " |")
    for name, why in (skipped or {}).items():
        lines.append("| " + " | ".join([name, f"skipped: {why}", *[""] * (len(head) - 2)]) + " |")
    return "\n".join(lines)


def platform_table(result: EvalResult, metric: str = "map@10") -> str:
    wide = (result.summary.select("ranker", "platform", metric)
            .pivot(on="platform", index="ranker", values=metric).sort("ranker"))
    others = sorted(c for c in wide.columns if c not in ("ranker", "all", *PLATFORMS))
    cols = [c for c in ("all", *PLATFORMS, *others) if c in wide.columns]
    lines = ["| ranker | " + " | ".join(f"{metric} {c}" for c in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for row in wide.iter_rows(named=True):
        lines.append(f"| {row['ranker']} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, title: str, path) -> None:
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_map_by_k(result: EvalResult, path) -> None:
    plt = _pyplot()
    s = result.summary.filter(pl.col("platform") == "all")
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in s.iter_rows(named=True):
        ax.plot(result.settings.ks, [row[f"map@{k}"] for k in result.settings.ks], marker="o",
                label=row["ranker"])
    ax.set_xlabel("K")
    ax.set_ylabel("MAP@K")
    _finish(plt, fig, ax, "MAP@K on the held-out days", path)


def plot_calibration(tables: dict[str, list[dict]], path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, table in tables.items():
        xs = [r["mean_predicted"] for r in table]
        ys = [r["actual_rate"] for r in table]
        top = max(top, *xs, *ys)
        ax.plot(xs, ys, marker="o", label=name)
    ax.plot([0, top], [0, top], ls="--", color="grey", label="perfect")
    ax.set_xlabel("mean predicted take probability (decile)")
    ax.set_ylabel("actual take rate")
    _finish(plt, fig, ax, "Calibration of the take head", path)


__all__ = ["comparison_table", "platform_table", "plot_calibration", "plot_map_by_k"]
