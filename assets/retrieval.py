"""The retrieval assets: a two-tower model, the day's candidate index, the shared user embeddings.

* `retrieval_model` (ml group, unpartitioned): the two-tower (`ml.two_tower`) on dlrm_model's
  window, data and seed, trained on Ray Train workers, logged to MLflow and registered as
  `<registered model>_retrieval` with the alias `champion` (the index and the daily rows name
  the version they used).
* `serving/candidate_index` (daily partitions): partition D's scoring candidates through the
  class tower into a faiss index per platform, saved under `<lakehouse>/serving/candidate_index/D/`
  with the retrieval version and the ranker champion it was built for (`ml.retrieval`).
  `serving/recommendations` reads it (retrieve then rank) and refuses one of other versions.
* `embeddings/user_embeddings` (daily partitions, its own job and schedule): the user tower's
  vector of every active user per platform, a Delta table (one partition per feature_date,
  replaced in one commit) that other models and surfaces can read.
"""

import dataclasses
import datetime as dt
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.model import CHAMPION_KEY, MODEL_KEY, _job_of, _latest_metadata, _ray_storage, gold_store
from assets.model_metadata import figures
from assets.resources import LakehouseResource, MlflowResource
from lakehouse.io.delta import replace_partitions
from lakehouse.io.settings import LakehouseSettings

RETRIEVAL_KEY = dg.AssetKey("retrieval_model")
INDEX_KEY = dg.AssetKey(["serving", "candidate_index"])
EMBEDDINGS_KEY = dg.AssetKey(["embeddings", "user_embeddings"])
SUFFIX = "_retrieval"


class RetrievalTrainingConfig(dg.Config):
    tower: list[int] = Field([128, 64], description="tower MLP sizes; the last is the vector's")
    temperature: float = Field(0.05, description="softmax temperature of the in-batch loss")
    sample_fraction: float | None = Field(None, description="share of users the tower trains on "
                                                            "(None: dlrm_model's); it reads the takes "
                                                            "alone, so it can afford more users than "
                                                            "the ranker")
    num_workers: int = Field(1, description="Ray Train workers")
    use_ray: bool = Field(True, description="train on Ray Train (else in this process)")


def index_root(settings: LakehouseSettings) -> str:
    return f"{settings.uri.rstrip('/')}/serving/candidate_index"


def embeddings_uri(settings: LakehouseSettings) -> str:
    return f"{settings.uri.rstrip('/')}/serving/user_embeddings"


def retrieval_tracking(settings: LakehouseSettings, mlflow: MlflowResource):
    tr = mlflow.tracking(settings)
    return dataclasses.replace(tr, registered_model=tr.registered_model + SUFFIX)


def retrieval_champion(settings: LakehouseSettings, mlflow: MlflowResource):
    """(tracking, model version) of the retrieval model in use; a Failure saying what to run."""
    from ml import tracking as mlt

    tr = retrieval_tracking(settings, mlflow)
    mv = mlt.get_alias_version(tr.registered_model, "champion", client_or_uri=tr.tracking_uri)
    if mv is None:
        raise dg.Failure(description=(
            f"no retrieval model: '{tr.registered_model}' has no 'champion' alias in MLflow "
            f"({tr.tracking_uri}); materialize retrieval_model (train_model_job) first. Nothing "
            "was written; the previous index, rows and cache are untouched."))
    return tr, mv


def retrieval_ref(settings: LakehouseSettings, mlflow: MlflowResource, feature_date: dt.date):
    from ml.retrieval import RetrievalRef, index_uri

    tr, mv = retrieval_champion(settings, mlflow)
    return RetrievalRef(model_uri=mv.source, version=int(mv.version), tracking_uri=tr.tracking_uri,
                        index_uri=index_uri(index_root(settings), feature_date))


def _day_and_tower(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                   mlflow: MlflowResource, what: str):
    """(retrieval ref, the partition's DayInputs, tower, pair encoder); a Failure naming `what`
    when the day has no features or candidates."""
    from ml.inference import load_day
    from ml.rows import InferenceError, InferenceSettings

    settings = lakehouse.settings()
    feature_date = dt.date.fromisoformat(context.partition_key)
    ref = retrieval_ref(settings, mlflow, feature_date)
    try:
        day = load_day(gold_store(settings), feature_date, InferenceSettings(dataset=lakehouse.dataset()))
    except InferenceError as e:
        raise dg.Failure(description=f"no {what} for {feature_date}: {e}") from e
    return (ref, day, *ref.load_tower())


def build_retrieval_assets(partitions_def: dg.PartitionsDefinition,
                           automation: dg.AutomationCondition | None = None,
                           gold_inputs: tuple[str, ...] = ()) -> list[dg.AssetsDefinition]:
    @dg.asset(key=RETRIEVAL_KEY, group_name="ml", deps=[MODEL_KEY], kinds={"pytorch", "ray", "mlflow"},
              description="Two-tower retrieval model (TorchRec EmbeddingBagCollection, in-batch "
                          "negatives) on dlrm_model's window, trained on Ray Train; registered in "
                          "MLflow as <model>_retrieval, alias champion.")
    def retrieval_model(context: dg.AssetExecutionContext, config: RetrievalTrainingConfig,
                        lakehouse: LakehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
        from ml import tracking as mlt
        from ml.workflow import train_and_log

        settings = lakehouse.settings()
        model_meta = _latest_metadata(context.instance, MODEL_KEY)
        _, job = _job_of(model_meta, gold_store(settings), lakehouse.dataset())
        job = dataclasses.replace(job, model=dataclasses.replace(
            job.model, architecture="two_tower", tower=list(config.tower), temperature=config.temperature))
        if config.sample_fraction is not None:
            job = dataclasses.replace(job, data=dataclasses.replace(job.data, sample_fraction=config.sample_fraction))
        tr = retrieval_tracking(settings, mlflow)
        parent = model_meta.get("mlflow_run_name") or model_meta["mlflow_run_id"][:8]
        trained = train_and_log(
            job, tr, run_name=f"{parent}{SUFFIX}", num_workers=config.num_workers, use_ray=config.use_ray,
            ray_storage=_ray_storage(settings), tags={"dagster.run_id": context.run.run_id,
                                                      "retrieval_of": model_meta["mlflow_run_id"]},
            log=context.log.info)
        mlt.set_alias(tr.registered_model, "champion", int(trained.version), client_or_uri=tr.tracking_uri)
        last = trained.history[-1] if trained.history else {}
        return dg.MaterializeResult(metadata={
            "mlflow_run": dg.MetadataValue.url(tr.run_url(trained.experiment_id, trained.run_id)),
            "mlflow_run_id": trained.run_id,
            "registered_model": tr.registered_model,
            "version": int(trained.version),
            "ranker_run_id": model_meta["mlflow_run_id"],
            "train_seconds": round(trained.seconds, 1),
            **figures({"valid_auc_take": last.get("valid_auc_take")}),
            "vector_dim": int(config.tower[-1]),
        })

    @dg.asset(key=INDEX_KEY, group_name="serving", partitions_def=partitions_def,
              deps=[*(dg.AssetKey(["gold", n]) for n in gold_inputs), RETRIEVAL_KEY, CHAMPION_KEY],
              kinds={"faiss"}, automation_condition=automation,
              description="Partition D's scoring candidates through the class tower into a faiss "
                          "inner-product index per platform (exact up to exact_max classes, HNSW "
                          "above), with the retrieval and ranker versions it belongs to.")
    def candidate_index(context: dg.AssetExecutionContext, config: IndexConfig,
                        lakehouse: LakehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
        from assets.serving import _champion
        from ml.retrieval import build_index, save_index

        settings = lakehouse.settings()
        _, ranker = _champion(settings, mlflow)
        ref, day, tower, pairs = _day_and_tower(context, lakehouse, mlflow, "candidate index")
        index = build_index(tower, pairs, day, retrieval_version=ref.version,
                            ranker_version=int(ranker.version), exact_max=config.exact_max)
        files = save_index(index, ref.index_uri)
        return dg.MaterializeResult(metadata={
            "index_uri": ref.index_uri, "files": len(files),
            "retrieval_version": ref.version, "ranker_version": int(ranker.version),
            "classes": dg.MetadataValue.json({p: len(pi.class_ids) for p, pi in index.platforms.items()}),
            "kind": dg.MetadataValue.json({p: pi.kind for p, pi in index.platforms.items()}),
        })

    @dg.asset(key=EMBEDDINGS_KEY, group_name="embeddings", partitions_def=partitions_def,
              deps=[*(dg.AssetKey(["gold", n]) for n in gold_inputs), RETRIEVAL_KEY],
              kinds={"pytorch", "delta"},
              description="The user tower's vector of every active user per platform (For you "
                          "context), partition D; a versioned Delta table other models can read.")
    def user_embeddings(context: dg.AssetExecutionContext, lakehouse: LakehouseResource,
                        mlflow: MlflowResource) -> dg.MaterializeResult:
        import shutil

        import pyarrow.dataset as pds

        from assets.serving import _stage_rows
        from ml.retrieval import USER_EMBEDDING_SCHEMA, user_embeddings as rows_of
        from ml.rows import InferenceSettings

        settings = lakehouse.settings()
        so = settings.storage_options() or None
        ref, day, tower, pairs = _day_and_tower(context, lakehouse, mlflow, "user embeddings")
        feature_date, inf, gold = day.feature_date, InferenceSettings(dataset=lakehouse.dataset()), gold_store(settings)
        staging = Path(settings.data_dir) / "staging" / f"user_embeddings-{feature_date}-{context.run.run_id[:8]}"
        try:
            n = _stage_rows(rows_of(gold, day, tower, pairs, inf, ref.version), USER_EMBEDDING_SCHEMA, staging)
            reader = pds.dataset(str(staging), format="parquet", schema=USER_EMBEDDING_SCHEMA).scanner().to_reader()
            version = replace_partitions(embeddings_uri(settings), reader,
                                         predicate=f"feature_date = '{feature_date.isoformat()}'",
                                         partition_by=["feature_date"], storage_options=so)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": n, "delta_uri": embeddings_uri(settings), "delta_version": version,
            "model_version": ref.version, "dim": tower.dim})

    return [retrieval_model, candidate_index, user_embeddings]


class IndexConfig(dg.Config):
    exact_max: int = Field(50_000, description="exact search (IndexFlatIP) up to this many classes "
                                               "per platform, HNSW above")
