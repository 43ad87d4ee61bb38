"""Publish dbt models to the gold layer as Delta tables.

Which models are published is dbt config, not Python: a model whose ``meta`` has
``publish: {layer: gold, partition_by: <date column>}`` is written to ``<lakehouse>/<layer>/<model>``
after ``dbt build`` (``name: <table>`` publishes it under another table name: the mapped dataset's
marts publish the same gold tables as the fitness ones). A run over a date range replaces exactly
those dates (one commit), so a failed run leaves the previous version, and every version stays
readable (Delta time travel). The pipeline stages the rows (:func:`stage`), audits them, and only
then commits them (:func:`commit`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Mapping

import duckdb
import pyarrow as pa

from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings


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


def stage(settings: LakehouseSettings, spec: PublishSpec, *, start: dt.date | None = None,
          end: dt.date | None = None) -> pa.Table:
    """The rows dbt built for the model (all, or the dates start..end of its partition column),
    read from the DuckDB working file: what a publish would commit, for the audit first."""
    where, params = "", []
    if spec.partition_by and start and end:
        where, params = f" WHERE {spec.partition_by} BETWEEN ? AND ?", [start, end]
    con = duckdb.connect(settings.duckdb_path, read_only=True)
    try:
        return con.execute(f"SELECT * FROM {spec.relation}{where}", params).fetch_arrow_table()
    finally:
        con.close()


def commit(settings: LakehouseSettings, spec: PublishSpec, table: pa.Table, *, start: dt.date | None = None,
           end: dt.date | None = None) -> PublishResult:
    """Replace the model's Delta rows (all, or the dates start..end) with `table`, one commit."""
    uri = settings.table_uri(spec.layer, spec.model)
    partition_by = [spec.partition_by] if spec.partition_by else []
    opts = settings.storage_options()
    predicate = None
    if spec.partition_by and start and end:
        predicate = f"{spec.partition_by} >= '{start.isoformat()}' AND {spec.partition_by} <= '{end.isoformat()}'"
        version = delta.replace_partitions(uri, table, predicate=predicate, partition_by=partition_by,
                                           storage_options=opts)
    else:
        version = delta.overwrite(uri, table, partition_by=partition_by, storage_options=opts)
    return PublishResult(uri=uri, version=version, rows=table.num_rows, predicate=predicate)
