"""The suites: one per bronze entity, generated from the landing contract (which checks block:
``config.BRONZE_BLOCKING``); the mapped import's bronze interactions; one per gold mart of
``config.GOLD_TABLES`` / ``MAPPED_GOLD_TABLES``."""

from __future__ import annotations

from typing import Any, Mapping

from lakehouse.contract import BY_NAME, ENTITIES, Entity
from lakehouse.mapped.mapping import EVENT_TYPES
from lakehouse.quality.checks import (
    AcceptedValues,
    Check,
    NotNull,
    PositiveRatio,
    Ranges,
    ReferentialIntegrity,
    RowVolume,
    SuiteSpec,
    UniqueKey,
)
from lakehouse.quality.config import BRONZE_BLOCKING, GOLD_TABLES, POSITIVE_RATIO_TOLERANCE, VOLUME_BAND


def mapped_bronze_suite(volume_band: tuple[float, float] = VOLUME_BAND) -> SuiteSpec:
    """bronze mapped_interactions (one event_date partition at a time)."""
    return SuiteSpec(
        table="bronze_mapped_interactions",
        checks=(
            UniqueKey(("interaction_id",)),
            NotNull(("interaction_id", "user_id", "item_id", "event_ts", "platform", "event_type")),
            AcceptedValues({"event_type": EVENT_TYPES}),
            RowVolume(volume_band, blocking=False),
        ),
        description="bronze mapped_interactions: the import's contract",
    )


def bronze_suite(entity: Entity | str, *, volume_band: tuple[float, float] = VOLUME_BAND) -> SuiteSpec:
    """The bronze suite of one contract entity (one daily partition is validated at a time).

    Reference names are the referenced entities' names ("users", "classes", "instructors");
    their values are that entity's key ids (e.g. every known ``user_id``).
    """
    e = BY_NAME[entity] if isinstance(entity, str) else entity
    b = lambda name: name in BRONZE_BLOCKING  # noqa: E731
    checks: list[Check] = [UniqueKey(tuple(e.key), blocking=b("unique_key"))]
    required = tuple(c.name for c in e.columns if not c.nullable)
    if required:
        checks.append(NotNull(required, blocking=b("not_null")))
    accepted = {c.name: tuple(c.accepted) for c in e.columns if c.accepted is not None}
    if accepted:
        checks.append(AcceptedValues(accepted, blocking=b("accepted_values")))
    bounds = {c.name: (c.min, c.max) for c in e.columns if c.min is not None or c.max is not None}
    if bounds:
        checks.append(Ranges(bounds, blocking=b("ranges")))
    if e.references:
        checks.append(ReferentialIntegrity(dict(e.references), blocking=b("referential_integrity")))
    checks.append(RowVolume(volume_band, blocking=b("row_volume_vs_previous")))
    return SuiteSpec(table=f"bronze_{e.name}", checks=tuple(checks),
                     description=f"bronze {e.name}: generated from the landing contract")


def gold_suite(table: str, *, tables: Mapping[str, dict] | None = None, **overrides: Any) -> SuiteSpec:
    """A gold mart's suite from :data:`GOLD_TABLES` (or ``tables``, e.g. :data:`MAPPED_GOLD_TABLES`;
    ``overrides`` replace entries of its dict).

    ``training_examples`` needs ``negatives_per_positive``: use :func:`training_examples_suite`.
    """
    tables = GOLD_TABLES if tables is None else tables
    if table not in tables:
        raise KeyError(f"no gold suite for {table!r}; known: {sorted(tables)}")
    conf = {**tables[table], **overrides}
    blocking = set(conf.get("blocking", ()))
    b = lambda name: name in blocking  # noqa: E731
    checks: list[Check] = []
    if conf.get("unique_key"):
        checks.append(UniqueKey(tuple(conf["unique_key"]), blocking=b("unique_key")))
    if conf.get("not_null"):
        checks.append(NotNull(tuple(conf["not_null"]), blocking=b("not_null")))
    if conf.get("accepted_values"):
        checks.append(AcceptedValues(dict(conf["accepted_values"]), blocking=b("accepted_values")))
    if conf.get("ranges"):
        checks.append(Ranges(dict(conf["ranges"]), blocking=b("ranges")))
    if conf.get("positive_ratio"):
        r = conf.get("negatives_per_positive")
        if r is None:
            raise ValueError(f"{table}: positive_ratio needs negatives_per_positive")
        checks.append(PositiveRatio(conf["positive_ratio"], float(r),
                                    tolerance=conf.get("tolerance", POSITIVE_RATIO_TOLERANCE),
                                    blocking=b("positive_ratio")))
    if conf.get("referential_integrity"):
        checks.append(ReferentialIntegrity(dict(conf["referential_integrity"]),
                                           blocking=b("referential_integrity")))
    if conf.get("row_volume_vs_previous"):
        checks.append(RowVolume(tuple(conf["row_volume_vs_previous"]),
                                blocking=b("row_volume_vs_previous")))
    return SuiteSpec(table=table, checks=tuple(checks), description=f"gold {table}")


def training_examples_suite(
    negatives_per_positive: float,
    *,
    tolerance: float = POSITIVE_RATIO_TOLERANCE,
    tables: Mapping[str, dict] | None = None,
) -> SuiteSpec:
    """The training_examples suite; the positive share must be near 1/(negatives_per_positive+1)."""
    return gold_suite("training_examples", tables=tables, negatives_per_positive=negatives_per_positive,
                      tolerance=tolerance)


BRONZE_SUITES: dict[str, SuiteSpec] = {e.name: bronze_suite(e) for e in ENTITIES}


__all__ = ["BRONZE_SUITES", "bronze_suite", "gold_suite", "mapped_bronze_suite", "training_examples_suite"]
