"""Jobs: the daily chain for a partition, its lakehouse-only part, training, re-scoring.

The daily jobs take their partitions from their assets (the simulator's first day, or a mapped
dataset's), so one set of jobs serves both."""

import dagster as dg

_SERVING = dg.AssetSelection.groups("serving")
# Jobs that run dbt on the DuckDB working file; dagster.yaml lets one such run go at a time.
_DUCKDB = {"lakehouse/duckdb": "writer"}
# Everything executable but training: landing files and the remediation log are
# external assets, not part of a run; the user embeddings refresh on their own schedule.
_DAILY = dg.AssetSelection.all() - dg.AssetSelection.groups("landing", "ml", "ops", "embeddings")

daily_job = dg.define_asset_job(
    name="daily_recommendations_job",
    selection=_DAILY,
    # One process for the whole chain: on a small machine, process start-up (imports of
    # Dagster, dbt, GX) costs more than parallel steps gain; dbt and Ray run their own processes.
    executor_def=dg.in_process_executor,
    tags=_DUCKDB,
    description="A day end to end: ingest its landing files, build the dbt features, publish gold "
    "Delta tables, run the checks, score every active user with the champion, publish the cache.",
)

lakehouse_job = dg.define_asset_job(
    name="daily_lakehouse_job",
    selection=_DAILY - _SERVING,
    executor_def=dg.in_process_executor,
    tags=_DUCKDB,
    description="Ingest, features, publication and checks of a day (or a range), without "
    "scoring: backfills, and days before a first model exists.",
)

recompute_job = dg.define_asset_job(
    name="recompute_features_job",
    selection=dg.AssetSelection.groups("staging", "intermediate", "marts", "gold"),
    executor_def=dg.in_process_executor,
    tags=_DUCKDB,
    description="dbt and the gold publish (with their checks) for a range of days, from bronze as "
    "it is: what the correction sensor runs after a committed day was corrected.",
)

ingest_job = dg.define_asset_job(
    name="bronze_ingest_job",
    selection=dg.AssetSelection.groups("bronze"),
    description="Only the bronze ingest of a day (landing -> bronze Delta + quarantine).",
)

train_model_job = dg.define_asset_job(
    name="train_model_job",
    selection=dg.AssetSelection.groups("ml"),
    executor_def=dg.in_process_executor,
    description="Train the DLRM on the latest gold window (Ray Train), evaluate it against the "
    "baselines and the champion, and promote it if it wins.",
)

rescore_job = dg.define_asset_job(
    name="rescore_job",
    selection=_SERVING,
    executor_def=dg.in_process_executor,
    description="Re-score a day with the current champion and republish the cache.",
)

embeddings_job = dg.define_asset_job(
    name="user_embeddings_job",
    selection=dg.AssetSelection.groups("embeddings"),
    executor_def=dg.in_process_executor,
    description="The shared user embeddings of a day (the retrieval model's user tower), on their "
    "own schedule, independent of the ranker's daily chain.",
)

freshness_job = dg.define_asset_job(
    name="cache_freshness_job",
    selection=dg.AssetSelection.checks_for_assets(dg.AssetKey(["serving", "home_screen_cache"])),
    description="Only the freshness check of the published cache.",
)
