"""The model assets: train (Ray Train workers, MLflow) -> evaluate (baselines, oracle) -> promote.

* `dlrm_model`: trains the multi-head DLRM on the latest gold window; the run and the registered
  version are linked in its metadata. Hyper-parameters are `ModelTrainingConfig` (launchpad).
* `model_evaluation`: scores the held-out days with the new model, a context-free ablation
  trained on the same data, the popularity baseline, the current champion and (on simulated
  data) the oracle; the comparison table and plots are shown on the asset and logged to MLflow.
* `champion_model`: the promotion gate; the new version becomes `champion` only if it beats the
  champion on the same lists and no blocking check failed, else `challenger`, and says why.

The three are unpartitioned and read every partition of the gold tables they depend on.
"""

import datetime as dt
from pathlib import Path
from typing import Sequence

import dagster as dg
from pydantic import Field

from assets.resources import LakehouseResource, MlflowResource
from ml.evaluation import EvalSettings
from ml.oracle import load_oracle
from ml.train import TrainConfig
from ml.training_job import DataWindow, ModelHParams, TrainingJob, plan_window
from ml.workflow import (
    ablation_job,
    champion_scorer,
    eval_days,
    evaluate_models,
    log_evaluation,
    png_markdown,
    promote,
    reference_scorer,
    train,
    train_and_log,
)

GROUP = "ml"
MODEL_KEY = dg.AssetKey("dlrm_model")
EVALUATION_KEY = dg.AssetKey("model_evaluation")
GOLD_INPUTS = ("training_examples", "user_features_daily", "class_features_daily",
               "scoring_candidates", "user_instructor_affinity")
# a mapped dataset (bring your own data) has no instructors, so no affinity table
MAPPED_GOLD_INPUTS = GOLD_INPUTS[:4]


class ModelTrainingConfig(dg.Config):
    """Hyper-parameters and data knobs of one training run (editable in the launchpad)."""

    train_days: int = Field(28, description="event days trained on, ending before the held-out days")
    valid_days: int = Field(1, description="latest days held out for validation and evaluation")
    sample_fraction: float = Field(1.0, description="share of users kept for training (stable hash)")
    epochs: int = 2
    batch_size: int = 2048
    lr: float = Field(2e-3, description="dense parameters (Adam)")
    sparse_lr: float = Field(0.05, description="embedding tables (Adagrad, fused kernel)")
    embedding_dim: int = 16
    bottom_mlp: list[int] = [128, 64, 16]
    top_mlp: list[int] = [256, 128]
    interaction: str = Field("dot", description="dot (DLRM) or dcn (cross network)")
    include_ids: bool | None = Field(None, description="user_id/class_id embeddings; default: off for "
                                     "the simulator's data (attributes carry cold start), on for a "
                                     "mapped dataset (its items may have no attributes)")
    num_workers: int = Field(1, description="Ray Train workers")
    use_gpu: bool = Field(False, description="NCCL + sharded embeddings on GPU workers")
    seed: int = 0
    resume_run_id: str = Field("", description="resume the Ray checkpoints of this earlier Dagster "
                                               "run (set by the failure sensor after a lost worker)")

    def job(self, lakehouse_uri: str, storage_options: dict | None,
            window: DataWindow | None = None, dataset: str = "fitness") -> TrainingJob:
        """The training job on the latest gold window (or on `window`, to repeat a job)."""
        include_ids = self.include_ids if self.include_ids is not None else dataset == "mapped"
        window = window or plan_window(
            lakehouse_uri, train_days=self.train_days, valid_days=self.valid_days,
            storage_options=storage_options, sample_fraction=self.sample_fraction, seed=self.seed)
        return TrainingJob(
            data=window,
            model=ModelHParams(embedding_dim=self.embedding_dim, bottom_mlp=list(self.bottom_mlp),
                               top_mlp=list(self.top_mlp), interaction=self.interaction,
                               include_ids=include_ids),
            train=TrainConfig(epochs=self.epochs, lr=self.lr, sparse_lr=self.sparse_lr,
                              batch_size=self.batch_size, optimizer="adam",
                              sparse_optimizer="adagrad", fused=True,
                              seed=self.seed),
            dataset=dataset,
        )

    def run_name(self, job: TrainingJob, root_run_id: str) -> str:
        """One name per Dagster run and its re-executions (same root run): re-executing a failed
        run resumes from its Ray checkpoints; a new materialization trains afresh."""
        return f"dlrm-{job.data.valid_end or job.data.train_end}-{root_run_id[:8]}"


def failed_blocking_checks(instance: dg.DagsterInstance,
                           checks: Sequence[dg.AssetCheckKey]) -> list[str]:
    """The blocking checks on the model's inputs whose latest evaluation failed (in this run the
    orchestrator already skips the model; this catches a failure left by an earlier run)."""
    failed = []
    for ck in checks:
        record = instance.get_latest_asset_check_evaluation_record(ck)
        if record is not None and record.status.value == "FAILED":
            failed.append(f"{ck.asset_key.to_user_string()}:{ck.name}")
    return failed


def blocking_checks_on_inputs(checks: Sequence[dg.AssetChecksDefinition],
                              gold_inputs: Sequence[str] = GOLD_INPUTS) -> list[dg.AssetCheckKey]:
    inputs = set(_gold_deps(gold_inputs))
    return [spec.key for c in checks for spec in c.check_specs
            if spec.blocking and spec.asset_key in inputs]


def _gold_deps(gold_inputs: Sequence[str] = GOLD_INPUTS) -> list[dg.AssetKey]:
    return [dg.AssetKey(["gold", name]) for name in gold_inputs]


def _ray_storage(settings) -> str:
    path = Path(settings.data_dir).absolute() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


class EvaluationConfig(dg.Config):
    eval_user_fraction: float = Field(0.25, description="share of users whose lists are evaluated")


def _job_of(model_meta: dict, lakehouse_uri: str, so: dict | None,
            dataset: str = "fitness") -> tuple[ModelTrainingConfig, TrainingJob]:
    """The model's own config and window, from its materialization metadata."""
    cfg = ModelTrainingConfig(**model_meta["config"])
    w = {k: dt.date.fromisoformat(v) for k, v in model_meta["window"].items() if v != "None"}
    window = DataWindow(lakehouse_uri=lakehouse_uri, storage_options=so,
                        sample_fraction=cfg.sample_fraction, seed=cfg.seed, **w)
    return cfg, cfg.job(lakehouse_uri, so, window, dataset=dataset)


def _r(x: float) -> float:
    """Four decimals for the UI (NaN stays NaN)."""
    return round(float(x), 4)


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(description=f"{key.to_user_string()} has never been materialized")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def build_model_assets(blocking_checks: Sequence[dg.AssetCheckKey] = (),
                       gold_inputs: Sequence[str] = GOLD_INPUTS) -> list[dg.AssetsDefinition]:
    """The three assets; `blocking_checks`: the blocking checks on the gold inputs (from the
    definitions), whose latest failure keeps training and promotion from starting."""

    @dg.asset(
        key=MODEL_KEY,
        group_name=GROUP,
        deps=_gold_deps(gold_inputs),
        kinds={"pytorch", "ray", "mlflow"},
        description="Multi-head TorchRec DLRM trained on Ray Train workers; registered in MLflow.",
    )
    def dlrm_model(context: dg.AssetExecutionContext, config: ModelTrainingConfig,
                   lakehouse: LakehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
        settings = lakehouse.settings()
        failed = failed_blocking_checks(context.instance, blocking_checks)
        if failed:
            raise dg.Failure(
                description="training not started: blocking checks failed on its inputs: "
                + ", ".join(failed),
                metadata={"failed_checks": failed},
            )
        so = settings.storage_options() or None
        # missing / empty table: a clear error naming it
        job = config.job(settings.uri, so, dataset=settings.dataset)
        tr = mlflow.tracking(settings)
        run_name = config.run_name(job, config.resume_run_id or context.run.root_run_id or context.run.run_id)
        context.log.info(f"training {run_name} on {job.data.train_start}..{job.data.train_end} "
                         f"with {config.num_workers} Ray worker(s)")
        trained = train_and_log(
            job, tr, run_name=run_name, num_workers=config.num_workers, use_ray=True,
            use_gpu=config.use_gpu, ray_storage=_ray_storage(settings),
            tags={"dagster.run_id": context.run.run_id}, log=context.log.info,
        )
        last = trained.history[-1] if trained.history else {}
        return dg.MaterializeResult(metadata={
            "mlflow_run": dg.MetadataValue.url(tr.run_url(trained.experiment_id, trained.run_id)),
            "mlflow_run_id": trained.run_id,
            "mlflow_experiment_id": trained.experiment_id,
            "model_uri": trained.model_uri,
            "registered_model": tr.registered_model,
            "version": trained.version,
            "window": dg.MetadataValue.json({k: str(v) for k, v in {
                "train_start": job.data.train_start, "train_end": job.data.train_end,
                "valid_start": job.data.valid_start, "valid_end": job.data.valid_end}.items()}),
            "delta_versions": dg.MetadataValue.json(trained.table_versions),
            "ray_workers": trained.num_workers,
            "resumed_from_epoch": trained.resumed_from_epoch if trained.resumed_from_epoch is not None else -1,
            "train_seconds": round(trained.seconds, 1),
            "samples_per_s": round(float(last.get("samples_per_s", 0.0)), 0),
            "valid_auc_take": _r(last.get("valid_auc_take", float("nan"))),
            "valid_logloss_take": _r(last.get("valid_logloss_take", float("nan"))),
            "config": dg.MetadataValue.json(config.model_dump()),
        })


    @dg.asset(
        key=EVALUATION_KEY,
        group_name=GROUP,
        deps=[MODEL_KEY],
        kinds={"pytorch", "mlflow"},
        description="Held-out ranking metrics: model vs context-free ablation vs popularity vs "
                    "champion vs oracle; per platform, cold start, calibration.",
    )
    def model_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig,
                         lakehouse: LakehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
        settings = lakehouse.settings()
        so = settings.storage_options() or None
        model_meta = _latest_metadata(context.instance, MODEL_KEY)
        tr = mlflow.tracking(settings)
        from ml import tracking as mlt

        mlt.ensure_experiment(tr.experiment, tr.tracking_uri, tr.artifact_root)
        module, encoders, _ = mlt.load_torchscript(model_meta["model_uri"])
        module.eval()
        models = {"candidate": (lambda d, s: module(d, s), encoders)}

        # the context-free ablation: the same job, without context features, same data and seed
        model_cfg, job = _job_of(model_meta, settings.uri, so, settings.dataset)
        abl = ablation_job(job)
        context.log.info("training the context-free ablation")
        abl_result, abl_enc, _ = train(abl, use_ray=False)
        models["ablation"] = (reference_scorer(abl_result.state_dict, abl_result.model_config), abl_enc)

        champ = champion_scorer(tr)
        champion_version = None
        # a champion trained on the other dataset (a lakehouse switched to a mapping) is no rival
        if (champ is not None and champ[0] != model_meta.get("version")
                and champ[2].spec.dataset == settings.dataset):
            champion_version, fn, enc = champ
            models["champion"] = (fn, enc)

        # only the simulator knows true preferences; a mapped dataset has no oracle
        oracle = load_oracle(settings.landing_uri, settings.uri, so) if settings.dataset == "fitness" else None
        eval_settings = EvalSettings(days=eval_days(job), user_fraction=config.eval_user_fraction,
                                     seed=model_cfg.seed, dataset=settings.dataset)
        out_dir = Path(settings.data_dir) / "evaluation" / model_meta["mlflow_run_id"]
        ev = evaluate_models(settings.uri, models, eval_settings, oracle=oracle,
                             storage_options=so, out_dir=out_dir, log=context.log.info,
                             train_window=(job.data.train_start, job.data.train_end))
        log_evaluation(ev, model_meta["mlflow_run_id"])
        report = "\n\n".join([ev.markdown, png_markdown(ev.plots["map_at_k"], "MAP@K"),
                              png_markdown(ev.plots["calibration"], "calibration")])
        r = ev.result
        meta = {
            "report": dg.MetadataValue.md(report),
            "mlflow_run": dg.MetadataValue.url(
                tr.run_url(model_meta["mlflow_experiment_id"], model_meta["mlflow_run_id"])),
            "version": model_meta.get("version"),
            "champion_version": champion_version if champion_version is not None else -1,
            "eval_days": ", ".join(d.isoformat() for d in eval_settings.days),
            "lists": int(r.summary.filter((r.summary["ranker"] == "candidate") & (r.summary["platform"] == "all"))["lists"][0]),
            # exact (unrounded): the promotion gate compares these two
            "map@10": r.metric("candidate", "map@10"),
            "map@10 popularity": _r(r.metric("popularity", "map@10")),
            "map@10 ablation": _r(r.metric("ablation", "map@10")),
            "map@10 oracle": _r(r.metric("oracle", "map@10") if oracle else float("nan")),
            "map@10 champion": (r.metric("champion", "map@10") if champion_version else float("nan")),
            "vs popularity": _r(ev.ratio("candidate", "popularity")),
            "vs ablation": _r(ev.ratio("candidate", "ablation")),
            "vs oracle": _r(ev.ratio("candidate", "oracle") if oracle else float("nan")),
            "new-class slots in top 10": _r(r.new_class_share["candidate"]),
            "coverage@10": _r(r.coverage["candidate"]),
            "auc_take": _r(ev.heads["candidate"]["auc_take"]),
            "ece_take": _r(ev.heads["candidate"]["ece_take"]),
            "has_oracle": oracle is not None,
        }
        return dg.MaterializeResult(metadata=meta)


    @dg.asset(
        group_name=GROUP,
        deps=[EVALUATION_KEY],
        kinds={"mlflow"},
        description="Promotion gate: the new version becomes MLflow's `champion` only if it beats "
                    "the champion on the same lists and no blocking check failed.",
    )
    def champion_model(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                       mlflow: MlflowResource) -> dg.MaterializeResult:
        settings = lakehouse.settings()
        tr = mlflow.tracking(settings)
        model_meta = _latest_metadata(context.instance, MODEL_KEY)
        eval_meta = _latest_metadata(context.instance, EVALUATION_KEY)
        if eval_meta.get("version") != model_meta.get("version"):
            raise dg.Failure(description=(
                f"model_evaluation is for version {eval_meta.get('version')}, the latest dlrm_model is "
                f"version {model_meta.get('version')}: materialize model_evaluation first"))
        from ml import tracking as mlt
        from ml.promotion import apply, decide

        mlt.ensure_experiment(tr.experiment, tr.tracking_uri, tr.artifact_root)
        champ_v = eval_meta.get("champion_version", -1)
        champ_v = None if champ_v in (None, -1) else int(champ_v)
        failed = failed_blocking_checks(context.instance, blocking_checks)
        decision = decide({"map@10": float(eval_meta["map@10"])},
                          {"map@10": float(eval_meta["map@10 champion"])} if champ_v else None,
                          failed_checks=failed, champion_version=champ_v)
        apply(tr.tracking_uri, tr.registered_model, int(model_meta["version"]), decision,
              champion_version=champ_v)
        context.log.info(decision.reason)
        current = mlt.get_alias_version(tr.registered_model, "champion", client_or_uri=tr.tracking_uri)
        return dg.MaterializeResult(metadata={
            "promoted": decision.promote,
            "alias": decision.alias,
            "reason": decision.reason,
            "candidate_version": int(model_meta["version"]),
            "champion_version": int(current.version) if current is not None else -1,
            "map@10": decision.candidate,
            "map@10 champion before": decision.champion if decision.champion is not None else float("nan"),
        })

    return [dlrm_model, model_evaluation, champion_model]
