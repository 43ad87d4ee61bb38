"""The model's life cycle in plain functions: train -> log to MLflow -> evaluate (the gate that
promotes is `ml.promotion`). The Dagster assets (`assets/model.py`) and the hyperparameter search
(`ml.search`) are thin callers, so everything here runs and is tested without the orchestrator.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl
import torch

from ml import tracking
from ml.evaluation import EvalResult, evaluate, head_metrics
from ml.examples import read_examples
from ml.features import Encoders
from ml.gold import GoldStore, day_span
from ml.lists import EvalSettings
from ml.metrics import format_ratio
from ml.model import ModelConfig, build_model
from ml.peers import Peers
from ml.rankers import ModelRanker, PopularityRanker, Ranker, torch_score_fn
from ml.report import comparison_table, platform_table, plot_calibration, plot_map_by_k
from ml.training_job import TrainingJob, fit_encoders, run_training

Log = Callable[[str], None]

# the lists the ratio to popularity is also given on (cold: fewer than `cold_user_workouts` takes
# before the day), where what a model can know differs most
SLICES = {"warm": ~pl.col("cold_user"), "cold": pl.col("cold_user")}
SLICE_LABELS = {"warm": "users with history", "cold": "cold users"}


@dataclass(kw_only=True)
class Tracking:
    """Where runs and models go: any MLflow tracking URI; artifacts under artifact_root."""

    tracking_uri: str
    artifact_root: str | None = None
    experiment: str = "class-recommender"
    registered_model: str = "class_recommender"
    ui_url: str = "http://127.0.0.1:5000"

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass
class TrainedModel:
    run_id: str
    experiment_id: str
    model_uri: str
    version: int | None
    encoders: Encoders
    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    table_versions: dict[str, int]
    seconds: float
    resumed_from_epoch: int | None = None
    num_workers: int = 1


# ---------------------------------------------------------------------------------------------
# Training


def train_and_log(
    job: TrainingJob,
    tracking_cfg: Tracking,
    *,
    run_name: str,
    num_workers: int = 1,
    use_ray: bool = True,
    use_gpu: bool = False,
    ray_storage: str | None = None,
    register: bool = True,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    log: Log | None = None,
) -> TrainedModel:
    """Fit the encoders, train (`train_on_ray` with `num_workers` Ray Train workers, checkpoints
    under `ray_storage/run_name`; or `run_training` in this process when not use_ray), then log
    params, input lineage (Delta versions), per-epoch metrics and the scoring model (+ encoders)
    to one MLflow run; register it as `tracking_cfg.registered_model` when `register`."""
    exp_id = tracking.ensure_experiment(tracking_cfg.experiment, tracking_cfg.tracking_uri,
                                        tracking_cfg.artifact_root)
    gold = job.data.gold
    versions = gold.lineage()
    t0 = time.perf_counter()
    encoders = fit_encoders(job)
    if use_ray:
        from ml.ray_training import train_on_ray

        if not ray_storage:
            raise ValueError("Ray training needs ray_storage (checkpoints, resume)")
        result = train_on_ray(job, encoders, num_workers=num_workers, use_gpu=use_gpu,
                              storage_path=ray_storage, run_name=run_name)
    else:
        result = run_training(job, encoders)
    seconds = time.perf_counter() - t0
    if log:
        log(f"trained {run_name} in {seconds:.1f}s: {result.history[-1] if result.history else {}}")
    run_tags = {"mlflow.runName": run_name, "mlflow.note.content": describe(job, result), **(tags or {})}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    with tracking.start_run(experiment_id=exp_id, tags=run_tags) as run:
        tracking.log_params(job.params())
        tracking.log_params({"num_workers": result.num_workers, "use_ray": use_ray})
        tracking.log_lineage(versions, {t: gold.table_uri(t) for t in versions})
        for row in result.history:
            tracking.log_dict_metrics(row, step=int(row.get("epoch", 0)))
        tracking.log_dict_metrics({"train_seconds": seconds})
        model = tracking.log_scoring_model(
            state_dict=result.state_dict, model_config=result.model_config, encoders=encoders,
            registered_model_name=tracking_cfg.registered_model if register else None,
            input_columns=read_examples(gold, dataset=job.dataset).collect_schema().names(),
        )
    return TrainedModel(
        run_id=run.info.run_id, experiment_id=exp_id, model_uri=model.model_uri,
        version=model.registered_version, encoders=encoders, model_config=result.model_config,
        state_dict=result.state_dict, history=result.history, table_versions=versions,
        seconds=seconds, resumed_from_epoch=result.resumed_from_epoch,
        num_workers=result.num_workers,
    )


def reference_scorer(state_dict: dict, config: ModelConfig):
    m = build_model(config, "reference")
    m.load_state_dict(state_dict)
    return torch_score_fn(m)


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Evaluation:
    result: EvalResult
    heads: dict[str, dict]  # ranker -> AUC / logloss / calibration
    markdown: str
    plots: dict[str, str]  # name -> PNG path
    metrics: dict[str, float] = field(default_factory=dict)  # flat, for MLflow and the gate
    notes: list[str] = field(default_factory=list)
    # ranker -> the candidate's MAP@10 over that ranker's, with its paired bootstrap interval
    comparisons: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # peer -> why it was not fitted
    # slice -> the candidate's MAP@10 over popularity's on that slice's lists, with its interval
    slices: dict[str, dict] = field(default_factory=dict)

    def ratio(self, a: str, b: str, metric: str = "map@10") -> float:
        x, y = self.result.metric(a, metric), self.result.metric(b, metric)
        return x / y if y and not math.isnan(y) and y > 0 else float("nan")


def evaluate_models(
    gold: GoldStore,
    models: dict[str, tuple[Callable, Encoders]],
    settings: EvalSettings,
    *,
    oracle: Ranker | None = None,
    candidate: str = "candidate",
    out_dir: str | Path | None = None,
    log: Log | None = None,
    train_window: tuple[dt.date, dt.date] | None = None,
    peers: Peers | None = None,
) -> Evaluation:
    """Rank the held-out lists with every model (name -> (score_fn, encoders)), popularity, the
    fitted `peers` (`ml.peers.fit_peers`) and, when given, the oracle; per-head AUC/log-loss and
    calibration for each model.

    The report's notes on the protocol are the dataset's (`Dataset.evaluation_notes`: mapped
    data never has an oracle, and its report describes the temporal split; `train_window`: the
    models' training event days, if given)."""
    rankers: list = [ModelRanker(n, fn, enc) for n, (fn, enc) in models.items()]
    rankers.append(PopularityRanker())
    peers = peers or Peers()
    rankers.extend(peers.rankers)
    notes = settings.dataset.evaluation_notes(settings.days, train_window, oracle=oracle is not None,
                                              list_unit=settings.list_unit)
    notes += peers_notes(peers)
    if oracle is not None:
        rankers.append(oracle)
    result = evaluate(gold, rankers, settings, log=log)
    heads = {n: head_metrics(gold, fn, enc, settings.days,
                             sample_fraction=settings.user_fraction, seed=settings.seed)
             for n, (fn, enc) in models.items()}
    out = Path(out_dir or tempfile.mkdtemp(prefix="evaluation-"))
    out.mkdir(parents=True, exist_ok=True)
    plots = {"map_at_k": str(out / "map_at_k.png"), "calibration": str(out / "calibration.png")}
    plot_map_by_k(result, plots["map_at_k"])
    plot_calibration({n: h["calibration"] for n, h in heads.items()}, plots["calibration"])

    metrics: dict[str, float] = {}
    for row in result.summary.iter_rows(named=True):
        prefix = f"{row['ranker']}." + ("" if row["platform"] == "all" else f"{row['platform']}.")
        for k, v in row.items():
            if k not in ("ranker", "platform") and v is not None:
                metrics[prefix + k] = float(v)
    for name in result.coverage:
        metrics[f"{name}.coverage@10"] = result.coverage[name]
        metrics[f"{name}.new_class_slots@10"] = result.new_class_share[name]
    for n, h in heads.items():
        for k, v in h.items():
            if isinstance(v, (int, float)):
                metrics[f"{n}.{k}"] = float(v)

    comparisons = {r.name: result.compare(candidate, r.name) for r in rankers if r.name != candidate}
    for other, c in comparisons.items():
        for k in ("ratio", "low", "high"):
            metrics[f"{candidate}.vs_{other}.map@10_{k}"] = c[k]
    if comparisons:
        first = next(iter(comparisons.values()))
        metrics[f"{candidate}.eval_lists"], metrics[f"{candidate}.eval_users"] = first["lists"], first["users"]

    slices = {name: result.compare(candidate, "popularity", where=expr)
              for name, expr in SLICES.items()}
    for name, c in slices.items():
        for k in ("ratio", "low", "high", "lists"):
            metrics[f"{candidate}.vs_popularity.{name}.map@10_{k}"] = float(c[k])
    for name, c in peers.chosen.items():
        metrics[f"{name}.setting"] = float(c["setting"])
    ev = Evaluation(result=result, heads=heads, markdown="", plots=plots, metrics=metrics, notes=notes,
                    comparisons=comparisons, skipped=dict(peers.skipped), slices=slices)
    ev.markdown = evaluation_markdown(ev, candidate)
    return ev


def evaluation_markdown(ev: Evaluation, candidate: str) -> str:
    r = ev.result
    days = day_span(r.settings.days)
    ds = r.settings.dataset
    seen = (f"the {ds.items_word} the user took on any earlier day" if r.settings.exclude_days is None
            else f"the user's {ds.items_word} of the last {r.settings.exclude_days} days")
    n = r.metric(candidate, "lists")
    lists = int(n) if n == n else 0
    parts = [
        f"**Held-out days:** {days}; users evaluated: {r.settings.user_fraction:.0%}; "
        f"candidates: every {ds.candidates_phrase} by the day before, minus {seen}.",
        "",
        *([f"**Cannot conclude:** {lists} lists, fewer than the {r.settings.min_lists} this "
           "protocol needs; the promotion gate promotes nothing on this evaluation.", ""]
          if lists < r.settings.min_lists else []),
        comparison_table(r, reference="popularity", candidate=candidate, comparisons=ev.comparisons,
                         skipped=ev.skipped),
        "",
        platform_table(r, "map@10"),
        "",
        "| model | " + " | ".join(f"AUC {h}" for h in ("take", "complete", "music_like"))
        + " | log-loss take | ECE take |",
        "|---|---|---|---|---|---|",
    ]
    for n, h in ev.heads.items():
        parts.append(f"| {n} | {h['auc_take']:.4f} | {h['auc_complete']:.4f} | "
                     f"{h['auc_music_like']:.4f} | {h['logloss_take']:.4f} | {h['ece_take']:.4f} |")
    ratios = [f"{other} {format_ratio(c)}" for other, c in ev.comparisons.items()]
    if ratios:
        c = next(iter(ev.comparisons.values()))
        parts += ["", f"**MAP@10 of {candidate} vs** (95% paired bootstrap over {c['users']} users, "
                      f"{c['lists']} lists): " + ", ".join(ratios)]
    sliced = [f"{SLICE_LABELS[name]} ({c['lists']} lists, {c['users']} users) {format_ratio(c)}"
              for name, c in ev.slices.items() if c["lists"]]
    if sliced:
        parts += ["", f"**{candidate} vs popularity by slice:** " + "; ".join(sliced)]
    parts += [f"_{n}_" for n in ev.notes]
    return "\n".join(parts)


def peers_notes(peers: Peers) -> list[str]:
    """What the report says of the peers: each one's tuned setting and where it was tuned."""
    notes = []
    for name, c in peers.chosen.items():
        tried = ", ".join(f"{v}: {m:.4f}" for v, m in c["validation_map@10"].items())
        notes.append(f"Peer {name}: setting {c['setting']}, chosen on the validation days "
                     f"{c['validation_days']} at the end of the training window (MAP@10 {tried}).")
    notes += [f"Peer {name} skipped: {why}." for name, why in peers.skipped.items()]
    return notes


def png_markdown(path: str, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"


def describe(job: TrainingJob, result) -> str:
    """The run's description (MLflow shows it on the run page): what was trained on what."""
    w, m = job.data, job.model
    form = ("a factorization machine (no MLPs)" if not m.top_mlp else f"a DLRM ({m.interaction} "
            f"interaction, top MLP {list(m.top_mlp)})")
    held = (f"; held out {w.valid_start.isoformat()}..{w.valid_end.isoformat()}"
            if w.valid_start and w.valid_end else "")
    return (f"{form} with heads {', '.join(result.model_config.heads)}, on the {job.dataset.name} "
            f"data: trained on the event days {w.train_start.isoformat()}..{w.train_end.isoformat()}"
            f" ({w.sample_fraction:.0%} of users){held}; "
            f"{'without' if not m.with_context else 'with'} the context features; "
            f"{result.num_workers} worker(s), {job.backend} backend.")


def headline_metrics(ev: Evaluation, candidate: str = "candidate") -> dict[str, float]:
    """The few figures a person reads first, at the top level of the run: MAP@10 with its ratio
    to popularity and that ratio's interval, the lists, and the AUC of each head (`eval.*`
    holds every metric of the evaluation)."""
    out = {"map_at_10": ev.result.metric(candidate, "map@10")}
    pop = ev.comparisons.get("popularity")
    if pop:
        out |= {"map_at_10_vs_popularity": pop["ratio"], "map_at_10_vs_popularity_low": pop["low"],
                "map_at_10_vs_popularity_high": pop["high"], "eval_lists": float(pop["lists"])}
    out |= {k: float(v) for k, v in ev.heads.get(candidate, {}).items() if k.startswith("auc_")}
    return out


def log_evaluation(ev: Evaluation, run_id: str) -> None:
    """Evaluation metrics, the markdown report and the plots into the candidate's MLflow run."""
    with tracking.start_run(run_id=run_id):
        tracking.log_dict_metrics({f"eval.{k}": v for k, v in ev.metrics.items()})
        tracking.log_dict_metrics(headline_metrics(ev))
        tracking.log_text(ev.markdown, "evaluation/report.md")
        tracking.log_text(ev.result.summary.write_csv(), "evaluation/summary.csv")
        for p in ev.plots.values():
            tracking.log_artifact(p, "evaluation")


# ---------------------------------------------------------------------------------------------
# The champion and the jobs it is compared with


@dataclass(frozen=True)
class Champion:
    """The registered champion as the evaluation scores it."""

    version: int
    score_fn: Callable
    encoders: Encoders
    train_end: dt.date | None  # the last event day it trained on (None: its run did not say)

    def fair_days(self, days: list[dt.date]) -> list[dt.date]:
        """The held-out days it did not train on (all of them when its window is unknown)."""
        return [d for d in days if self.train_end is None or d > self.train_end]


def champion_scorer(tracking_cfg: Tracking) -> Champion | None:
    """The current champion (its scorer, encoders and training window), or None."""
    mv = tracking.get_alias_version(tracking_cfg.registered_model, "champion",
                                    client_or_uri=tracking_cfg.tracking_uri)
    if mv is None:
        return None
    module, encoders, _ = tracking.load_torchscript(mv.source)
    fn = torch_score_fn(module)
    end = None
    if mv.run_id:
        params = tracking.client(tracking_cfg.tracking_uri).get_run(mv.run_id).data.params
        end = dt.date.fromisoformat(params["data.train_end"]) if params.get("data.train_end") else None
    return Champion(int(mv.version), fn, encoders, end)


def ablation_job(job: TrainingJob) -> TrainingJob:
    """The same job without the context features."""
    return dataclasses.replace(job, model=dataclasses.replace(job.model, with_context=False))


# The seeds' baseline: a field-weighted factorization machine, the DLRM without its MLPs (the
# dense features projected to the embedding size by one layer, no top MLP: each head is linear
# in the pairwise dots). Knobs of `ModelHParams`, as `make train MODEL_CONFIG` takes them.
FM_KNOBS = {"top_mlp": [], "bottom_mlp": [16]}


def fm_job(job: TrainingJob) -> TrainingJob:
    """The same job (window, data, features, seed, training) as a factorization machine."""
    knobs = {**FM_KNOBS, "bottom_mlp": [job.model.embedding_dim]}
    return dataclasses.replace(job, model=dataclasses.replace(job.model, **knobs))


def eval_days(job: TrainingJob) -> list[dt.date]:
    w = job.data
    if w.valid_start is None or w.valid_end is None:
        raise ValueError("the job has no held-out days (valid_days=0): nothing to evaluate on")
    n = (w.valid_end - w.valid_start).days + 1
    return [w.valid_start + dt.timedelta(days=i) for i in range(n)]


__all__ = [
    "Tracking", "TrainedModel", "Evaluation", "train_and_log", "reference_scorer",
    "evaluate_models", "evaluation_markdown", "headline_metrics", "peers_notes", "png_markdown", "log_evaluation",
    "Champion", "champion_scorer",
    "ablation_job", "fm_job", "FM_KNOBS", "eval_days",
]
