"""Publish dbt models to the gold layer as Delta tables.

Which models are published is dbt config, not Python: a model whose ``meta`` has
``publish: {layer: gold, partition_by: <date column>}`` is written to ``<lakehouse>/<layer>/<model>``
after ``dbt build`` (``name: <table>`` publishes it under another table name: the mapped dataset's
marts publish the same gold tables as the fitness ones). A run over a date range replaces exactly those dates (one commit), so a failed
run leaves the previous version, and every version stays readable (Delta time travel).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping

import duckdb

from lakehouse import delta
from lakehouse.settings import LakehouseSettings

BATCH_ROWS = 256_000


@dataclass(frozen=True)
class PublishSpec:
    model: str  # the gold table name (the dbt model's name unless its meta says `name`)
    relation: str  # the DuckDB relation dbt built, e.g. "warehouse"."main"."user_features_daily"
    layer: str
    partition_by: str | None


@dataclass(frozen=True)
class PublishResult:
    uri: str
    version: int
    rows: int
    predicate: str | None


def published_models(manifest: Mapping[str, Any]) -> dict[str, PublishSpec]:
    """unique_id -> PublishSpec for every model that asks to be published."""
    out = {}
    for uid, node in manifest.get("nodes", {}).items():
        if node.get("resource_type") != "model":
            continue
        meta = {**(node.get("meta") or {}), **((node.get("config") or {}).get("meta") or {})}
        pub = meta.get("publish")
        if not pub:
            continue
        if pub is True:
            pub = {}
        out[uid] = PublishSpec(
            model=pub.get("name") or node["name"],
            relation=node.get("relation_name") or f'"{node["schema"]}"."{node["alias"] or node["name"]}"',
            layer=pub.get("layer", "gold"),
            partition_by=pub.get("partition_by"),
        )
    return out


def publish(
    settings: LakehouseSettings,
    spec: PublishSpec,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> PublishResult:
    """Copy a model's rows (all, or the dates start..end of its partition column) into Delta."""
    uri = settings.table_uri(spec.layer, spec.model)
    where, predicate, params = "", None, []
    if spec.partition_by and start and end:
        where = f" WHERE {spec.partition_by} BETWEEN ? AND ?"
        predicate = f"{spec.partition_by} >= '{start.isoformat()}' AND {spec.partition_by} <= '{end.isoformat()}'"
        params = [start, end]
    partition_by = [spec.partition_by] if spec.partition_by else []
    opts = settings.storage_options()
    con = duckdb.connect(settings.duckdb_path, read_only=True)
    try:
        rows = con.execute(f"SELECT count(*) FROM {spec.relation}{where}", params).fetchone()[0]
        # Streams batches: memory stays bounded by BATCH_ROWS, not by the table.
        reader = con.execute(f"SELECT * FROM {spec.relation}{where}", params).fetch_record_batch(BATCH_ROWS)
        if predicate:
            version = delta.replace_partitions(uri, reader, predicate=predicate,
                                               partition_by=partition_by, storage_options=opts)
        else:
            version = delta.overwrite(uri, reader, partition_by=partition_by, storage_options=opts)
    finally:
        con.close()
    return PublishResult(uri=uri, version=version, rows=int(rows), predicate=predicate)
