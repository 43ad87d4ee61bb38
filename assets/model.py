"""The model assets: train (Ray Train workers, MLflow) -> ablation and factorization machine ->
evaluate (baselines, peers, oracle) -> promote.

* `dlrm_model`: trains the multi-head DLRM on the latest gold window; the run and the registered
  version are linked in its metadata. Hyper-parameters are `ModelTrainingConfig` (launchpad).
* `ablation_model`: the context-free ablation, a model of its own: dlrm_model's job (same window,
  data, seed and hyper-parameters) without the context features, trained in this process and
  logged as its own MLflow run (a child of the model's run; not registered).
* `fm_model`: a factorization machine (the seeds' baseline), built the same way: dlrm_model's job
  without its MLPs (`ml.workflow.fm_job`).
* `model_evaluation`: scores the held-out days with the new model, its ablation, the
  factorization machine, the popularity baseline, the standard peers (EASE, item-kNN, ALS), the
  current champion and (on simulated data) the oracle; the comparison table and plots are shown
  on the asset and logged to the model's MLflow run.
* `champion_model`: the promotion gate; the new version becomes `champion` only if its MAP@10 is
  above the champion's on the same lists and no blocking check failed, else `challenger`, and
  says why (with the ratio's interval).

The five are unpartitioned and read every partition of the gold tables they depend on.
"""

import dataclasses
import datetime as dt
import functools
from pathlib import Path
from typing import Sequence

import dagster as dg

from assets.model_config import EvaluationConfig, ModelTrainingConfig, PromotionConfig
from assets.model_metadata import evaluation_metadata, figures, gate_inputs, plot_entries
from assets.resources import LakehouseResource, MlflowResource
from ml.datasets import FITNESS, Dataset
from ml.gold import GoldStore, day_span
from ml.lists import EvalSettings
from ml.peers import fit_peers
from ml.train import input_wait_share
from ml.training_job import DataWindow, TrainingJob
from ml.workflow import (
    ablation_job,
    champion_scorer,
    eval_days,
    evaluate_models,
    fm_job,
    log_evaluation,
    png_markdown,
    train_and_log,
)

GROUP = "ml"
MODEL_KEY = dg.AssetKey("dlrm_model")
ABLATION_KEY = dg.AssetKey("ablation_model")
FM_KEY = dg.AssetKey("fm_model")
EVALUATION_KEY = dg.AssetKey("model_evaluation")
CHAMPION_KEY = dg.AssetKey("champion_model")
# every gold table a model may read (the definitions pass their dataset's, `Dataset.gold_inputs`)
GOLD_INPUTS = FITNESS.gold_inputs


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


def blocking_checks_on_inputs(checks: Sequence[dg.AssetsDefinition | dg.AssetChecksDefinition],
                              gold_inputs: Sequence[str] = GOLD_INPUTS) -> list[dg.AssetCheckKey]:
    """The blocking checks (of assets or check definitions) on the gold inputs."""
    inputs = set(_gold_deps(gold_inputs))
    return [spec.key for c in checks for spec in getattr(c, "check_specs", ())  # AssetSpecs have none
            if spec.blocking and spec.asset_key in inputs]


def _gold_deps(gold_inputs: Sequence[str] = GOLD_INPUTS) -> list[dg.AssetKey]:
    return [dg.AssetKey(["gold", name]) for name in gold_inputs]


def _ray_storage(settings) -> str:
    path = Path(settings.data_dir).absolute() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def gold_store(settings) -> GoldStore:
    """The lakehouse's tables as `ml` reads them (`settings`: the resource's LakehouseSettings)."""
    return GoldStore(settings.uri, settings.storage_options() or None)


def _job_of(model_meta: dict, gold: GoldStore,
            dataset: Dataset) -> tuple[ModelTrainingConfig, TrainingJob]:
    """The model's own config and window, from its materialization metadata."""
    cfg = ModelTrainingConfig(**model_meta["config"])
    w = {k: dt.date.fromisoformat(v) for k, v in model_meta["window"].items() if v != "None"}
    window = DataWindow(gold=gold, sample_fraction=cfg.sample_fraction, seed=cfg.seed, **w)
    return cfg, cfg.job(gold, window, dataset=dataset)


def _source(context: dg.AssetExecutionContext) -> dict[str, str]:
    """What MLflow shows as the run's source (else the process's entry point, `__main__.py`)."""
    return {"mlflow.source.name": f"dagster asset {context.asset_key.to_user_string()} "
                                  f"(run {context.run.run_id[:8]})", "mlflow.source.type": "JOB"}


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(description=f"{key.to_user_string()} has never been materialized")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def build_model_assets(blocking_checks: Sequence[dg.AssetCheckKey] = (),
                       gold_inputs: Sequence[str] = GOLD_INPUTS) -> list[dg.AssetsDefinition]:
    """The five assets; `blocking_checks`: the blocking checks on the gold inputs (from the
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
        # missing / empty table: a clear error naming it
        dataset = lakehouse.dataset()
        job = config.job(gold_store(settings), dataset=dataset,
                         holdout_lists=dataset.evaluation_protocol(settings).holdout_lists)
        tr = mlflow.tracking(settings)
        run_name = config.run_name(job, config.resume_run_id or context.run.root_run_id or context.run.run_id)
        context.log.info(f"training {run_name} on {job.data.train_start}..{job.data.train_end} "
                         f"with {config.num_workers} Ray worker(s)")
        trained = train_and_log(
            job, tr, run_name=run_name, num_workers=config.num_workers, use_ray=True,
            use_gpu=config.use_gpu, ray_storage=_ray_storage(settings),
            tags={"dagster.run_id": context.run.run_id, **_source(context)}, log=context.log.info,
        )
        last = trained.history[-1] if trained.history else {}
        return dg.MaterializeResult(metadata={
            "mlflow_run": dg.MetadataValue.url(tr.run_url(trained.experiment_id, trained.run_id)),
            "mlflow_run_id": trained.run_id,
            "mlflow_run_name": run_name,
            "mlflow_experiment_id": trained.experiment_id,
            "model_uri": trained.model_uri,
            "registered_model": tr.registered_model,
            "version": trained.version,
            "window": dg.MetadataValue.json({k: str(v) for k, v in {
                "train_start": job.data.train_start, "train_end": job.data.train_end,
                "valid_start": job.data.valid_start, "valid_end": job.data.valid_end}.items()}),
            "delta_versions": dg.MetadataValue.json(trained.table_versions),
            "ray_workers": trained.num_workers,
            "ray_nodes": int(last.get("nodes", 1)),
            **({"resumed_from_epoch": trained.resumed_from_epoch} if trained.resumed_from_epoch is not None else {}),
            "train_seconds": round(trained.seconds, 1),
            "samples_per_s": round(float(last.get("samples_per_s", 0.0)), 0),
            # of the epochs' time (rank 0's), the share spent waiting for batches
            "input_wait_share": round(input_wait_share(trained.history), 3),
            **figures({k: last.get(k) for k in ("valid_auc_take", "valid_logloss_take")}),
            "config": dg.MetadataValue.json(config.model_dump()),
        })


    def variant_asset(key: dg.AssetKey, suffix: str, job_of, description: str):
        """A reference model of its own: dlrm_model's job (same window, data and seed) changed by
        `job_of`, trained in this process and logged as a child MLflow run (not registered)."""

        @dg.asset(key=key, group_name=GROUP, deps=[MODEL_KEY], kinds={"pytorch", "mlflow"},
                  description=description)
        def variant(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                    mlflow: MlflowResource) -> dg.MaterializeResult:
            settings = lakehouse.settings()
            model_meta = _latest_metadata(context.instance, MODEL_KEY)
            _, job = _job_of(model_meta, gold_store(settings), lakehouse.dataset())
            tr = mlflow.tracking(settings)
            of = model_meta["mlflow_run_id"]
            parent = model_meta.get("mlflow_run_name") or of[:8]
            context.log.info(f"training the {suffix} of {parent}")
            trained = train_and_log(
                job_of(job), tr, run_name=f"{parent}-{suffix}", use_ray=False, register=False,
                parent_run_id=of, tags={"dagster.run_id": context.run.run_id, f"{suffix}_of": of, **_source(context)},
                log=context.log.info,
            )
            last = trained.history[-1] if trained.history else {}
            return dg.MaterializeResult(metadata={
                "mlflow_run": dg.MetadataValue.url(tr.run_url(trained.experiment_id, trained.run_id)),
                "mlflow_run_id": trained.run_id,
                "model_uri": trained.model_uri,
                f"{suffix}_of_run_id": of,
                f"{suffix}_of_version": model_meta.get("version"),
                "delta_versions": dg.MetadataValue.json(trained.table_versions),
                "train_seconds": round(trained.seconds, 1),
                **figures({k: last.get(k) for k in ("valid_auc_take", "valid_logloss_take")}),
            })

        return variant

    ablation_model = variant_asset(
        ABLATION_KEY, "ablation", ablation_job,
        "The context-free ablation: dlrm_model's job without the context features (same window, "
        "data and seed), trained in this process; its own MLflow run.")
    fm_model = variant_asset(
        FM_KEY, "fm", fm_job,
        "A factorization machine, the seeds' baseline and a peer in every evaluation: dlrm_model's "
        "job without its MLPs (same window, data, features and seed); its own MLflow run.")

    @dg.asset(
        key=EVALUATION_KEY,
        group_name=GROUP,
        deps=[MODEL_KEY, ABLATION_KEY, FM_KEY],
        kinds={"pytorch", "mlflow"},
        description="Held-out ranking metrics: model vs context-free ablation vs factorization "
                    "machine vs popularity vs EASE, item-kNN, ALS vs champion vs oracle; per "
                    "platform, cold start, calibration.",
    )
    def model_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig,
                         lakehouse: LakehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
        settings, dataset = lakehouse.settings(), lakehouse.dataset()
        gold = gold_store(settings)
        model_meta = _latest_metadata(context.instance, MODEL_KEY)
        tr = mlflow.tracking(settings)
        from ml import tracking as mlt

        mlt.ensure_experiment(tr.experiment, tr.tracking_uri, tr.artifact_root)
        abl_meta = _latest_metadata(context.instance, ABLATION_KEY)
        fm_meta = _latest_metadata(context.instance, FM_KEY)
        for name, key, meta in (("ablation", ABLATION_KEY, abl_meta), ("fm", FM_KEY, fm_meta)):
            if meta.get(f"{name}_of_run_id") != model_meta["mlflow_run_id"]:
                raise dg.Failure(description=(
                    f"{key.to_user_string()} is the {name} of MLflow run "
                    f"{meta.get(f'{name}_of_run_id')}, the latest dlrm_model is run "
                    f"{model_meta['mlflow_run_id']}: materialize {key.to_user_string()} first"))
        models = {}
        for name, meta in (("candidate", model_meta), ("ablation", abl_meta), ("fm", fm_meta)):
            module, encoders, _ = mlt.load_torchscript(meta["model_uri"])
            module.eval()
            models[name] = (module, encoders)
        model_cfg, job = _job_of(model_meta, gold, dataset)

        champ = champion_scorer(tr)
        champion_version, unscored, champion_note = None, None, ""
        days = eval_days(job)
        # a champion trained on the other dataset (a lakehouse switched to a mapping) is no rival
        if (champ is not None and champ.version != model_meta.get("version")
                and dataset.matches(champ.encoders.spec)):
            # both are scored on held-out days neither trained on
            fair = champ.fair_days(days)
            if fair:
                champion_version = champ.version
                models["champion"] = (champ.score_fn, champ.encoders)
                if len(fair) < len(days):
                    champion_note = (f"held-out days {fair[0]}..{fair[-1]} only: champion "
                                     f"v{champ.version} trained on days up to {champ.train_end}")
                    days = fair
            else:
                unscored = champ.version
                champion_note = (f"champion v{champ.version} trained on days up to {champ.train_end}, "
                                 f"every held-out day ({days[0]}..{days[-1]}) included: it cannot "
                                 "be compared on them")
            if champion_note:
                context.log.warning(champion_note)

        # only the simulator knows true preferences; a mapped dataset has no oracle
        oracle = None
        if dataset.simulated:
            from simulator.oracle import load_oracle

            oracle = load_oracle(settings.landing_uri,
                                 functools.partial(gold.scan, "workouts", layer="bronze"))
        protocol = dataset.evaluation_protocol(settings).eval_settings()  # exclusions, fewest lists
        if config.min_lists is not None:
            protocol["min_lists"] = config.min_lists
        eval_settings = EvalSettings(days=days, user_fraction=config.eval_user_fraction,
                                     seed=model_cfg.seed, dataset=dataset, **protocol)
        out_dir = Path(settings.data_dir) / "evaluation" / model_meta["mlflow_run_id"]
        train_window = (job.data.train_start, job.data.train_end)
        peers = (fit_peers(gold, train_window, eval_settings, validation_days=config.peer_validation_days,
                           log=context.log.info) if config.peers else None)
        ev = evaluate_models(gold, models, eval_settings, oracle=oracle,
                             out_dir=out_dir, log=context.log.info,
                             train_window=train_window, peers=peers)
        log_evaluation(ev, model_meta["mlflow_run_id"])  # every figure, exact, in MLflow
        report = "\n\n".join([ev.markdown, png_markdown(ev.plots["map_at_k"], "MAP@K"),
                              png_markdown(ev.plots["calibration"], "calibration")])
        r = ev.result
        lists = int(r.summary.filter((r.summary["ranker"] == "candidate") & (r.summary["platform"] == "all"))["lists"][0])
        meta = {
            "report": dg.MetadataValue.md(report),
            **plot_entries(tr, model_meta["mlflow_run_id"], ev.plots),
            "mlflow_run": dg.MetadataValue.url(
                tr.run_url(model_meta["mlflow_experiment_id"], model_meta["mlflow_run_id"])),
            "version": model_meta.get("version"),
            "ablation_run_id": abl_meta["mlflow_run_id"],
            "fm_run_id": fm_meta["mlflow_run_id"],
            **({"champion_note": champion_note} if champion_note else {}),
            "eval_days": day_span(eval_settings.days),
            "min_lists": eval_settings.min_lists,
            "lists": lists,
            **evaluation_metadata(ev, oracle=oracle is not None, champion_version=champion_version,
                                  unscored=unscored, peers=peers.chosen if peers else {}),
            # exact: the promotion gate decides on these
            "gate": dg.MetadataValue.json(gate_inputs(ev, lists=lists, min_lists=eval_settings.min_lists,
                                                      champion_version=champion_version, unscored=unscored)),
        }
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(
        key=CHAMPION_KEY,
        group_name=GROUP,
        deps=[EVALUATION_KEY],
        kinds={"mlflow"},
        description="Promotion gate: the new version becomes MLflow's `champion` only if its MAP@10 "
                    "is above the champion's on the same lists and no blocking check failed.",
    )
    def champion_model(context: dg.AssetExecutionContext, config: PromotionConfig,
                       lakehouse: LakehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
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
        gate = eval_meta["gate"]
        champ_v, unscored = gate.get("champion_version"), gate.get("champion_unscored_version")
        failed = failed_blocking_checks(context.instance, blocking_checks)

        def interval(other: str) -> dict | None:
            return gate.get(f"vs {other}")

        if champ_v:
            champion_metrics = {"map@10": float(gate["map@10 champion"])}
        elif unscored is not None:  # a champion the held-out days cannot judge: no NaN wins
            champ_v, champion_metrics = int(unscored), {"map@10": float("nan")}
        else:
            champion_metrics = None
        decision = decide({"map@10": float(gate["map@10"])}, champion_metrics,
                          failed_checks=failed, champion_version=champ_v,
                          vs_popularity=interval("popularity") if config.first_must_beat_popularity else None,
                          vs_champion=interval("champion"), lists=int(gate.get("lists", 0)),
                          min_lists=int(gate.get("min_lists", 0)))
        if eval_meta.get("champion_note"):
            decision = dataclasses.replace(decision, reason=f"{decision.reason} ({eval_meta['champion_note']})")
        apply(tr.tracking_uri, tr.registered_model, int(model_meta["version"]), decision,
              champion_version=champ_v)
        context.log.info(decision.reason)
        current = mlt.get_alias_version(tr.registered_model, "champion", client_or_uri=tr.tracking_uri)
        return dg.MaterializeResult(metadata={
            "promoted": decision.promote,
            "alias": decision.alias,
            "reason": decision.reason,
            "candidate_version": int(model_meta["version"]),
            **({"champion_version": int(current.version)} if current is not None else {}),
            **figures({"map@10": decision.candidate, "map@10 champion before": decision.champion}),
            "vs popularity, 95% CI": eval_meta.get("vs popularity, 95% CI", "n/a"),
            "vs champion, 95% CI": eval_meta.get("vs champion, 95% CI", "n/a"),
            "lists": int(eval_meta.get("lists", 0)),
        })

    return [dlrm_model, ablation_model, fm_model, model_evaluation, champion_model]
