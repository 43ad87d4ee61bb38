"""Jobs: the daily chain (ingest -> dbt -> publication -> checks) for a partition."""

import dagster as dg

from orchestration.partitions import daily_partitions

# Everything executable: landing files are external assets and are not part of a run.
daily_job = dg.define_asset_job(
    name="daily_lakehouse_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("landing", "ml"),
    partitions_def=daily_partitions,
    # One process for the whole chain: on a small machine, process start-up (imports of
    # Dagster, dbt, GX) costs more than parallel steps gain; dbt still runs as its own process.
    executor_def=dg.in_process_executor,
    description="Ingest a day's landing files, build the dbt features, publish gold Delta tables, run the checks.",
)

ingest_job = dg.define_asset_job(
    name="bronze_ingest_job",
    selection=dg.AssetSelection.groups("bronze"),
    partitions_def=daily_partitions,
    description="Only the bronze ingest of a day (landing -> bronze Delta + quarantine).",
)

train_model_job = dg.define_asset_job(
    name="train_model_job",
    selection=dg.AssetSelection.groups("ml"),
    executor_def=dg.in_process_executor,
    description="Train the DLRM on the latest gold window (Ray Train), evaluate it against the "
    "baselines and the champion, and promote it if it wins.",
)
