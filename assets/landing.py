"""The landing zone: files the app exports, seen by Dagster as external assets."""

from __future__ import annotations

import dagster as dg

from lakehouse.contract import ENTITIES


def landing_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", entity])


def build_landing_specs(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            key=landing_key(e.name),
            description=f"Raw `{e.name}` exports: landing/{e.name}/date=YYYY-MM-DD/*.parquet|jsonl",
            group_name="landing",
            partitions_def=partitions_def,
            metadata={"contract": dg.MetadataValue.md(
                "| column | type | nullable |\n|---|---|---|\n"
                + "\n".join(f"| {c.name} | {c.type} | {c.nullable} |" for c in e.columns))},
            kinds={"parquet"},
        )
        for e in ENTITIES
    ]
