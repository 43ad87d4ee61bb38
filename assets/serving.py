"""The serving assets: daily batch inference -> the home-screen cache the app reads.

* `serving/recommendations` (daily partitions): partition D scores every active user with the
  features of D for serve date D + 1, by MLflow's `champion`, on Ray actors; rows go to the
  `recommendations` Delta table (one partition per serve_date, replaced in one commit) and the
  popular fallback to `popular_classes`. No champion: the run fails and says so; a failed
  scoring run commits nothing, so yesterday's rows and cache stay.
* `serving/home_screen_cache` (daily partitions): the partition's rows, each class with its
  title, instructor, discipline, duration and "new" (`Dataset.display_catalogue`), published to the
  versioned on-disk cache (built aside, swapped in atomically, last versions kept); on S3 also
  exported to `<lakehouse>/exports/home_screen/` with a manifest written last. A partition older
  than the one already published is not published over it (a backfill never rolls the app back).
  Its check `cache_is_fresh` fails when the published cache is older than `FRESHNESS_HOURS`.
"""


import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
from dagster_aws.s3 import S3Resource
from pydantic import Field

from assets.model import CHAMPION_KEY
from assets.resources import LakehouseResource, MlflowResource
from assets.retrieval import INDEX_KEY, retrieval_ref
from lakehouse.io.delta import replace_partitions, table_exists
from lakehouse.io.settings import LakehouseSettings
from ml.rows import RETRIEVE_AFFINITY_CLASSES, RETRIEVE_NEW_DAYS, RETRIEVE_NEW_MAX

GROUP = "serving"
RECS_KEY = dg.AssetKey(["serving", "recommendations"])
CACHE_KEY = dg.AssetKey(["serving", "home_screen_cache"])
GOLD_INPUTS = ("user_features_daily", "class_features_daily", "scoring_candidates",
               "training_examples", "user_instructor_affinity")
# "older than a day and a bit": the daily run lands around 03:00; two missed hours are tolerated
FRESHNESS_HOURS = 26.0


def recommendations_uri(settings: LakehouseSettings) -> str:
    return f"{settings.uri.rstrip('/')}/serving/recommendations"


def popular_uri(settings: LakehouseSettings) -> str:
    return f"{settings.uri.rstrip('/')}/serving/popular_classes"


def cache_dir(settings: LakehouseSettings) -> Path:
    """The embedded cache lives with the local run state (the read service reads it there)."""
    return Path(settings.data_dir) / "cache"


def _feature_date(context: dg.AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


class InferenceConfig(dg.Config):
    """Knobs of one day's batch inference (editable in the launchpad)."""

    top_k: int = Field(10, description="classes per row")
    max_per_instructor: int = Field(2, description="at most this many classes of one instructor (or "
                                                   "of one cap_column value) per row")
    cap_column: str = Field("", description="mapped data: cap per value of this item column, e.g. "
                                            "item_attr_artist (empty: no cap; fitness: instructor_id)")
    exclude_days: int | None = Field(None, description="classes the user took in these days are not "
                                                       "recommended (default: the dataset's evaluation "
                                                       "protocol: 14 days, or a mapping's exclude_seen)")
    users_per_batch: int = Field(512, description="users scored together (bounds memory)")
    num_workers: int = Field(2, description="Ray actors scoring batches in parallel")
    use_ray: bool = Field(True, description="score on Ray actors (else in this process)")
    precision: str = Field("auto", description="bf16 for the large matmuls (~1.8x faster where the "
                                               "hardware has bf16, 99% equal top-10 lists), fp32 "
                                               "for exact scores, or auto: the faster of the two on "
                                               "this machine (bf16 is ~40x slower on an AVX2-only CPU)")
    retrieve: int | None = Field(200, description="retrieve then rank: the ranker scores each list's "
                                                  "nearest classes of the day's candidate_index (plus "
                                                  "popular and new ones); None: every candidate "
                                                  "(exhaustive)")
    retrieve_new_max: int | None = Field(RETRIEVE_NEW_MAX, description=(
        f"retrieve then rank: of the classes released in the last {RETRIEVE_NEW_DAYS} days, each "
        "list ranks the two-tower's best this many (None: all of them)"))
    retrieve_similar: int = Field(10, description="retrieve then rank: each list also ranks this many "
                                                  "classes taken together with each of the user's "
                                                  "recent items (the ranker's co-occurrence "
                                                  "neighbours; 0: none)")
    retrieve_affinity: int = Field(0, description="retrieve then rank: each list also ranks, for "
                                                  "each of the user's this many strongest "
                                                  "affinities (instructors), the two-tower's best "
                                                  "retrieve_affinity_classes of its classes (0: none)")
    retrieve_affinity_classes: int = Field(RETRIEVE_AFFINITY_CLASSES,
                                           description="retrieve then rank: classes per affinity")


class CacheConfig(dg.Config):
    keep: int = Field(3, description="cache versions kept for rollback")
    publish_older: bool = Field(False, description="publish even if an equal or newer serve date "
                                                   "is already published (a deliberate rollback)")


def _exclude_days(config: "InferenceConfig", lakehouse: LakehouseResource) -> int | None:
    """The config's exclusion window, else the dataset's protocol (the evaluation's: one rule)."""
    if config.exclude_days is not None:
        return config.exclude_days
    return lakehouse.dataset().evaluation_protocol(lakehouse.settings()).exclude_seen_days


def _champion(settings: LakehouseSettings, mlflow: MlflowResource):
    from ml import tracking as mlt

    tr = mlflow.tracking(settings)
    mlt.ensure_experiment(tr.experiment, tr.tracking_uri, tr.artifact_root)
    mv = mlt.get_alias_version(tr.registered_model, "champion", client_or_uri=tr.tracking_uri)
    if mv is None:
        raise dg.Failure(description=(
            f"no champion model: the registered model '{tr.registered_model}' has no 'champion' "
            f"alias in MLflow ({tr.tracking_uri}). Inference did not run; the previous "
            "recommendations and cache are untouched. Train and promote a model first "
            "(`make train`, or materialize the ml group)."))
    return tr, mv


def _stage_rows(frames, schema: pa.Schema, staging: Path) -> int:
    """Write the scorer's frames as local Parquet parts (bounded memory); returns the row count.

    Staged rather than streamed into the Delta writer: the scorer reads Delta tables while it
    runs, which deltalake does not allow from inside its own writer. A failure here leaves the
    Delta table untouched."""
    import pyarrow.parquet as pq

    staging.mkdir(parents=True, exist_ok=True)
    rows = 0
    for i, frame in enumerate(frames):
        if frame.height:
            pq.write_table(frame.to_arrow().cast(schema), staging / f"part-{i:05d}.parquet")
            rows += frame.height
    if rows == 0:
        raise RuntimeError("batch inference produced no rows: nothing written")
    return rows


def build_serving_assets(partitions_def: dg.PartitionsDefinition,
                         automation: dg.AutomationCondition | None = None,
                         gold_inputs: tuple[str, ...] = GOLD_INPUTS) -> list:
    @dg.asset(
        key=RECS_KEY,
        group_name=GROUP,
        partitions_def=partitions_def,
        deps=[*(dg.AssetKey(["gold", n]) for n in gold_inputs), CHAMPION_KEY, INDEX_KEY],
        kinds={"ray", "pytorch", "delta"},
        automation_condition=automation,
        description="Home-screen rows (For you, morning, evening, recover; a mapped dataset: For you) "
                    "for every active user and platform, scored by the MLflow champion; partition D "
                    "serves D + 1.",
    )
    def recommendations(context: dg.AssetExecutionContext, config: InferenceConfig,
                        lakehouse: LakehouseResource, mlflow: MlflowResource) -> dg.MaterializeResult:
        from ml.gold import GoldStore
        from ml.inference import InferenceStats, ModelRef, run_inference
        from ml.precision import resolve_precision
        from ml.rows import POPULAR_SCHEMA, RECOMMENDATION_SCHEMA, InferenceError, InferenceSettings

        settings = lakehouse.settings()
        so = settings.storage_options() or None
        feature_date = _feature_date(context)
        tr, mv = _champion(settings, mlflow)
        ref = ModelRef(model_uri=mv.source, version=int(mv.version), tracking_uri=tr.tracking_uri)
        inf = InferenceSettings(top_k=config.top_k, max_per_instructor=config.max_per_instructor,
                                exclude_days=_exclude_days(config, lakehouse), users_per_batch=config.users_per_batch,
                                precision=config.precision, dataset=lakehouse.dataset(),
                                cap_column=config.cap_column or None, retrieve=config.retrieve,
                                retrieve_new_max=config.retrieve_new_max,
                                retrieve_similar=config.retrieve_similar,
                                retrieve_affinity=config.retrieve_affinity,
                                retrieve_affinity_classes=config.retrieve_affinity_classes)
        stats = InferenceStats()
        retrieval = None if config.retrieve is None else retrieval_ref(settings, mlflow, feature_date)
        try:
            day, frames = run_inference(ref, GoldStore(settings.uri, so), feature_date, inf,
                                        use_ray=config.use_ray, num_workers=config.num_workers,
                                        stats=stats, log=context.log.info, retrieval=retrieval)
        except (InferenceError, FileNotFoundError) as e:
            raise dg.Failure(description=f"inference for {feature_date} did not run: {e}") from e
        serve = day.serve_date
        context.log.info(f"champion v{mv.version}: scoring {day.n_users} users for {serve}")
        import shutil

        import pyarrow.dataset as pds

        staging = Path(settings.data_dir) / "staging" / f"recommendations-{serve}-{context.run.run_id[:8]}"
        try:
            n_rows = _stage_rows(frames, RECOMMENDATION_SCHEMA, staging)
            reader = pds.dataset(str(staging), format="parquet", schema=RECOMMENDATION_SCHEMA).scanner().to_reader()
            version = replace_partitions(  # one commit replacing the serve date's rows
                recommendations_uri(settings), reader,
                predicate=f"serve_date = '{serve.isoformat()}'", partition_by=["serve_date"],
                storage_options=so)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        pop_version = replace_partitions(
            popular_uri(settings), day.popular.to_arrow().cast(POPULAR_SCHEMA),
            predicate=f"serve_date = '{serve.isoformat()}'", partition_by=["serve_date"],
            storage_options=so)
        per_row = (pl.scan_delta(recommendations_uri(settings), storage_options=so)
                   .filter(pl.col("serve_date") == serve)
                   .group_by("platform", "row_id").agg(pl.len().alias("rows"),
                                                       pl.col("user_id").n_unique().alias("users"))
                   .sort("platform", "row_id").collect())
        sample = _sample_screen(settings, serve, so)
        rate = stats.pairs_scored / stats.seconds if stats.seconds else 0.0
        context.log.info(f"{n_rows} rows for {stats.users} users, {stats.pairs_scored} "
                         f"scores in {stats.seconds:.1f} s ({rate:,.0f} scores/s)")
        return dg.MaterializeResult(metadata={
            "serve_date": serve.isoformat(),
            "model_version": int(mv.version),
            "dagster/row_count": n_rows,
            "users": stats.users,
            "scores": stats.pairs_scored,
            "scoring_seconds": round(stats.seconds, 1),
            "scores_per_s": round(rate),
            "ray_workers": stats.workers,
            "ray_nodes": stats.nodes,
            "precision": resolve_precision(config.precision),  # auto: the faster one on this machine
            "retrieval": (f"top {config.retrieve} of candidate_index (retrieval v{retrieval.version}), "
                          f"new classes: {'all' if config.retrieve_new_max is None else f'the best {config.retrieve_new_max}'}, "
                          f"{config.retrieve_similar} similar to each recent item"
                          + (f", {config.retrieve_affinity_classes} of each of the {config.retrieve_affinity} "
                             "strongest affinities" if config.retrieve_affinity else "")
                          if retrieval else "exhaustive"),
            "delta_uri": recommendations_uri(settings),
            "delta_version": version,
            "popular_delta_version": pop_version,
            "rows_per_platform_and_row": dg.MetadataValue.md(_md_table(per_row)),
            "sample_home_screen": dg.MetadataValue.md(sample),
        })

    @dg.asset(
        key=CACHE_KEY,
        group_name=GROUP,
        partitions_def=partitions_def,
        deps=[RECS_KEY],
        kinds={"sqlite", "s3"},
        automation_condition=automation,
        description="The recommendations published to the versioned key-value cache the app reads "
                    "(atomic swap, last versions kept); on S3 also exported with a manifest.",
    )
    def home_screen_cache(context: dg.AssetExecutionContext, config: CacheConfig,
                          lakehouse: LakehouseResource, s3: S3Resource) -> dg.MaterializeResult:
        from homefeed.cache import CacheStore
        from homefeed.payload import key_frames

        settings = lakehouse.settings()
        so = settings.storage_options() or None
        serve = _feature_date(context) + dt.timedelta(days=1)
        store = CacheStore(cache_dir(settings), keep=config.keep)
        current = store.current()
        if current is not None and current.serve_date > serve and not config.publish_older:
            msg = (f"not published: the cache already serves {current.serve_date} "
                   f"({current.name}); set publish_older to roll back to {serve}")
            context.log.warning(msg)
            return dg.MaterializeResult(metadata={"published": False, "reason": msg,
                                                  "cache_version": current.name})
        uri = recommendations_uri(settings)
        if not table_exists(uri, so):
            raise dg.Failure(description=f"no recommendations table at {uri}: run serving/recommendations first")
        lf = pl.scan_delta(uri, storage_options=so).filter(pl.col("serve_date") == serve)
        n_rows = lf.select(pl.len()).collect().item()
        if n_rows == 0:
            raise dg.Failure(description=f"{uri} has no rows for serve_date {serve}: nothing published; "
                                         "the current cache keeps serving")
        model_version = int(lf.select(pl.col("model_version").max()).collect().item())
        popular = (pl.scan_delta(popular_uri(settings), storage_options=so)
                   .filter(pl.col("serve_date") == serve).collect())
        from ml.gold import GoldStore

        # the cards' title, instructor, ...: joined once here, so the cache and the API carry them
        try:
            classes = lakehouse.dataset().display_catalogue(GoldStore(settings.uri, so))
        except FileNotFoundError as e:  # rows without a catalogue still serve, by class id
            context.log.warning(f"no class catalogue ({e}): items are published without titles")
            classes = None
        version = store.publish(key_frames(lf), popular, serve_date=serve, model_version=model_version,
                                classes=classes)
        meta = {"published": True, "cache_version": version.name, "cache_path": str(version.path),
                "serve_date": serve.isoformat(), "model_version": model_version,
                "keys": version.keys, "dagster/row_count": version.rows,
                "class_fields": classes is not None}
        if settings.is_s3:
            from homefeed.s3_export import export_to_s3

            bucket, _, prefix = settings.uri[len("s3://"):].partition("/")
            manifest = export_to_s3(s3.get_client(), bucket, f"{prefix.rstrip('/')}/exports/home_screen".lstrip("/"),
                                    version)
            meta["s3_manifest"] = f"s3://{bucket}/{manifest['manifest_key']}"
        context.log.info(f"published {version.name}: {version.keys} keys for {serve}")
        return dg.MaterializeResult(metadata=meta)

    @dg.asset_check(asset=CACHE_KEY, name="cache_is_fresh",
                    description=f"The published cache is at most {FRESHNESS_HOURS:g} hours old.")
    def cache_is_fresh(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
        return freshness_result(cache_dir(lakehouse.settings()))

    return [recommendations, home_screen_cache, cache_is_fresh]


def freshness_result(root: Path, now: dt.datetime | None = None,
                     max_hours: float = FRESHNESS_HOURS) -> dg.AssetCheckResult:
    from homefeed.cache import CacheStore

    current = CacheStore(root).current()
    if current is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": f"no cache published under {root}"})
    now = now or dt.datetime.now(dt.timezone.utc)
    age_h = (now - current.created_at).total_seconds() / 3600
    return dg.AssetCheckResult(
        passed=age_h <= max_hours,
        metadata={"cache_version": current.name, "serve_date": str(current.serve_date),
                  "age_hours": round(age_h, 2), "max_hours": max_hours},
    )


def _sample_screen(settings: LakehouseSettings, serve: dt.date, so) -> str:
    """One user's home screen, per platform, as markdown (the first user with the most rows)."""
    lf = pl.scan_delta(recommendations_uri(settings), storage_options=so).filter(pl.col("serve_date") == serve)
    top = lf.group_by("user_id").agg(pl.len().alias("n")).sort(["n", "user_id"], descending=[True, False]).head(1).collect()
    if top.height == 0:
        return "(no rows)"
    return home_screen_markdown(lf.filter(pl.col("user_id") == top["user_id"][0]).collect())


def _md_table(frame: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def home_screen_markdown(rows: pl.DataFrame, items: int = 5) -> str:
    out = []
    for platform in sorted(rows["platform"].unique().to_list()):
        out.append(f"**{rows['user_id'][0]} on {platform}**")
        pr = rows.filter(pl.col("platform") == platform).sort("row_rank", "rank")
        for (title,), g in pr.group_by("row_title", maintain_order=True):
            cls = ", ".join(f"{c} ({s:.2f})" for c, s in g.head(items).select("class_id", "score").iter_rows())
            out.append(f"- {title}: {cls}")
    return "\n".join(out)
