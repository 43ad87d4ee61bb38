"""Quality gates: declarative suites of named checks, validated with Great Expectations 1.x.

Plain Python (no Dagster imports). The Dagster side turns every check of a suite into an asset
check of the same name and every :class:`CheckOutcome` into its result::

    spec = bronze_suite("workouts")
    outcomes = run_suite(spec, df, reference={"users": user_ids, "classes": class_ids},
                         previous_row_count=rows_of_previous_partition)

A suite is validated in ONE Great Expectations run (one ephemeral context per process, one
batch per call), so a 1M-row frame takes seconds. Great Expectations is imported lazily, on the
first :func:`run_suite`: importing this module to declare asset checks costs nothing.

The gold column names live in the small dicts right below: a rename is a one-line change.
A column a suite names but the frame lacks does not crash the run: the check that needs it
fails and its description names the missing column.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from lakehouse.contract import BY_NAME, DISCIPLINES, ENTITIES, PLATFORMS, Entity

# --------------------------------------------------------------------------------------------
# Declarative configuration (edit here)
# --------------------------------------------------------------------------------------------

# Rows of this partition / rows of the previous partition must fall inside this band.
VOLUME_BAND: tuple[float, float] = (0.5, 2.0)
# Share of positives may deviate this much (relative) from 1 / (negatives_per_positive + 1).
POSITIVE_RATIO_TOLERANCE = 0.2
# How many example values / rows a failed check carries in its metadata.
N_EXAMPLES = 5
# Reference sets up to this size are checked by GX's ExpectColumnValuesToBeInSet inside the
# suite's single validation. Larger ones are checked with a vectorised pandas ``isin``: GX
# re-serialises an expectation's value_set dozens of times per validation (about 6 s for a
# 40,000-id set, measured with GX 1.24.1), while ``isin`` over 1M rows takes ~0.1 s. The
# outcome has the same form either way; its metadata says which engine ran ("engine").
GX_VALUE_SET_LIMIT = 1000

# Gold feature marts. Keys are check kinds; values name the columns. ``blocking`` lists the
# checks that protect training (a failing blocking check stops downstream materialisation).
GOLD_TABLES: dict[str, dict[str, Any]] = {
    "user_features_daily": {
        "unique_key": ("user_id", "feature_date"),
        "not_null": ("user_id", "feature_date", "workouts_total"),
        "ranges": {
            "workouts_7d": (0, None),
            "completion_rate_28d": (0.0, 1.0),
            "top_instructor_share": (0.0, 1.0),
        },
        "row_volume_vs_previous": VOLUME_BAND,
        "blocking": ("unique_key", "not_null", "ranges"),
    },
    "class_features_daily": {
        "unique_key": ("class_id", "feature_date"),
        "not_null": ("class_id", "feature_date", "discipline"),
        "accepted_values": {"discipline": DISCIPLINES},
        "ranges": {
            "age_days": (0, None),
            "completion_rate": (0.0, 1.0),
            "music_like_rate": (0.0, 1.0),
            "take_rate_7d": (0.0, 1.0),
        },
        "row_volume_vs_previous": VOLUME_BAND,
        "blocking": ("unique_key", "not_null", "accepted_values", "ranges"),
    },
    "training_examples": {
        "unique_key": ("example_id",),
        "not_null": ("user_id", "class_id", "platform", "label_take"),
        "accepted_values": {"platform": PLATFORMS, "label_take": (0, 1)},
        # day_of_week is ISO (1 = Monday .. 7 = Sunday, DuckDB isodow) in the dbt model; the
        # range is a parameter of training_examples_suite (pass (0, 6) for a 0-based one).
        "ranges": {"hour_of_day": (0, 23), "day_of_week": (1, 7)},
        "positive_ratio": "label_take",
        "referential_integrity": {"user_id": "users", "class_id": "classes"},
        "row_volume_vs_previous": VOLUME_BAND,
        "blocking": (
            "unique_key",
            "not_null",
            "accepted_values",
            "ranges",
            "positive_ratio",
            "referential_integrity",
        ),
    },
    "scoring_candidates": {
        "unique_key": ("feature_date", "platform", "class_id"),
        "not_null": ("feature_date", "platform", "class_id"),
        "accepted_values": {"platform": PLATFORMS},
        "blocking": ("unique_key", "not_null", "accepted_values"),
    },
}

# The same marts built from a mapping file (dbt_project/models/mapped): generic columns only.
# Referential integrity is left out: a declared side table need not list every id.
MAPPED_EVENT_TYPES = ("take", "complete", "music_like", "other", "below_threshold")
MAPPED_GOLD_TABLES: dict[str, dict[str, Any]] = {
    "user_features_daily": {
        "unique_key": ("user_id", "feature_date"),
        "not_null": ("user_id", "feature_date", "events_total"),
        "ranges": {"events_7d": (0, None), "events_total": (0, None),
                   "complete_rate_28d": (0.0, 1.0), "usual_hour": (0, 23)},
        "row_volume_vs_previous": VOLUME_BAND,
        "blocking": ("unique_key", "not_null", "ranges"),
    },
    "class_features_daily": {
        "unique_key": ("class_id", "feature_date"),
        "not_null": ("class_id", "feature_date", "release_date"),
        "ranges": {"age_days": (0, None), "events_total": (0, None),
                   "complete_rate": (0.0, 1.0), "music_like_rate": (0.0, 1.0)},
        "row_volume_vs_previous": VOLUME_BAND,
        "blocking": ("unique_key", "not_null", "ranges"),
    },
    "training_examples": {
        "unique_key": ("example_id",),
        "not_null": ("user_id", "class_id", "platform", "label_take"),
        "accepted_values": {"label_take": (0, 1), "label_complete": (0, 1), "label_music_like": (0, 1)},
        "ranges": {"hour_of_day": (0, 23), "day_of_week": (1, 7)},
        "positive_ratio": "label_take",
        "row_volume_vs_previous": VOLUME_BAND,
        # a small catalogue gives some positives fewer than K negatives: the ratio only warns
        "blocking": ("unique_key", "not_null", "accepted_values", "ranges"),
    },
    "scoring_candidates": {
        "unique_key": ("feature_date", "platform", "class_id"),
        "not_null": ("feature_date", "platform", "class_id"),
        "blocking": ("unique_key", "not_null"),
    },
}


def mapped_bronze_suite(volume_band: tuple[float, float] = VOLUME_BAND) -> SuiteSpec:
    """bronze mapped_interactions (one event_date partition at a time)."""
    return SuiteSpec(
        table="bronze_mapped_interactions",
        checks=(
            UniqueKey(("interaction_id",)),
            NotNull(("interaction_id", "user_id", "item_id", "event_ts", "platform", "event_type")),
            AcceptedValues({"event_type": MAPPED_EVENT_TYPES}),
            RowVolume(volume_band, blocking=False),
        ),
        description="bronze mapped_interactions: the import's contract",
    )


# Bronze: which checks block (the rest warn). Accepted values and ranges are enforced at
# ingest (quarantine) already, so here they only warn.
BRONZE_BLOCKING = ("unique_key", "not_null", "referential_integrity")

# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniqueKey:
    """The key (one column, or a compound key) is unique among the rows."""

    columns: tuple[str, ...]
    blocking: bool = True
    name: str = "unique_key"


@dataclass(frozen=True)
class NotNull:
    columns: tuple[str, ...]
    blocking: bool = True
    name: str = "not_null"


@dataclass(frozen=True)
class AcceptedValues:
    """column -> accepted values (nulls are left to NotNull)."""

    values: Mapping[str, tuple]
    blocking: bool = True
    name: str = "accepted_values"


@dataclass(frozen=True)
class Ranges:
    """column -> (min, max), inclusive; None leaves that side open. Nulls are ignored."""

    bounds: Mapping[str, tuple[float | None, float | None]]
    blocking: bool = True
    name: str = "ranges"


@dataclass(frozen=True)
class ReferentialIntegrity:
    """column -> name of a reference id set passed to :func:`run_suite` (``reference=``)."""

    references: Mapping[str, str]
    blocking: bool = True
    name: str = "referential_integrity"


@dataclass(frozen=True)
class RowVolume:
    """rows / previous_row_count within ``band``; passes with a note without a previous count."""

    band: tuple[float, float] = VOLUME_BAND
    blocking: bool = False
    name: str = "row_volume_vs_previous"


@dataclass(frozen=True)
class PositiveRatio:
    """Mean of the 0/1 ``column`` within 1/(r+1) * (1 -/+ tolerance), r = negatives_per_positive."""

    column: str
    negatives_per_positive: float
    tolerance: float = POSITIVE_RATIO_TOLERANCE
    blocking: bool = True
    name: str = "positive_ratio"

    @property
    def expected_share(self) -> float:
        return 1.0 / (self.negatives_per_positive + 1.0)

    @property
    def band(self) -> tuple[float, float]:
        p = self.expected_share
        return (p * (1.0 - self.tolerance), p * (1.0 + self.tolerance))


Check = Union[UniqueKey, NotNull, AcceptedValues, Ranges, ReferentialIntegrity, RowVolume, PositiveRatio]


@dataclass(frozen=True)
class SuiteSpec:
    table: str
    checks: tuple[Check, ...]
    description: str = ""

    def __post_init__(self) -> None:
        names = [c.name for c in self.checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"suite {self.table!r}: duplicate check names {dupes}")

    @property
    def check_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checks)

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"suite {self.table!r} has no check {name!r} (has {list(self.check_names)})")

    @property
    def key(self) -> tuple[str, ...]:
        for c in self.checks:
            if isinstance(c, UniqueKey):
                return c.columns
        return ()

    @property
    def reference_names(self) -> tuple[str, ...]:
        """Reference sets :func:`run_suite` needs for this suite (``reference=`` keys)."""
        out: list[str] = []
        for c in self.checks:
            if isinstance(c, ReferentialIntegrity):
                out += [r for r in c.references.values() if r not in out]
        return tuple(out)


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: str  # "ERROR" for blocking checks, "WARN" otherwise (Dagster AssetCheckSeverity values)
    description: str
    metadata: dict = field(default_factory=dict)
    table: str = ""
    blocking: bool = False


class QualityGateError(RuntimeError):
    """Raised by :func:`raise_for_blocking` when a blocking check failed."""

    def __init__(self, table: str, failed: Sequence[CheckOutcome]):
        self.table = table
        self.failed = list(failed)
        super().__init__(format_failures(self.failed) or f"{table}: blocking checks failed")


# --------------------------------------------------------------------------------------------
# Suite builders
# --------------------------------------------------------------------------------------------


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
    day_of_week_range: tuple[int, int] | None = None,
    tolerance: float = POSITIVE_RATIO_TOLERANCE,
) -> SuiteSpec:
    """The training_examples suite; the positive share must be near 1/(negatives_per_positive+1).

    ``day_of_week_range`` overrides the range of ``day_of_week`` in :data:`GOLD_TABLES`.
    """
    ranges = dict(GOLD_TABLES["training_examples"]["ranges"])
    if day_of_week_range is not None:
        ranges["day_of_week"] = tuple(day_of_week_range)
    return gold_suite("training_examples", negatives_per_positive=negatives_per_positive,
                      tolerance=tolerance, ranges=ranges)


BRONZE_SUITES: dict[str, SuiteSpec] = {e.name: bronze_suite(e) for e in ENTITIES}


# --------------------------------------------------------------------------------------------
# Great Expectations plumbing (lazy import, one ephemeral context per process)
# --------------------------------------------------------------------------------------------

_GX_LOCK = threading.Lock()
_GX_STATE: dict[str, Any] = {}


def _gx():
    """(gx module, whole-dataframe batch definition), created once per process."""
    with _GX_LOCK:
        if not _GX_STATE:
            # House rule: telemetry off. Set before GX is imported.
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            import great_expectations as gx
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            logger = logging.getLogger("great_expectations")
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
            try:
                # GX fingerprints every pandas batch (hashes the whole frame: ~0.6 s per 1M
                # rows, a full pickle for unhashable cells). The fingerprint is only a batch
                # marker nobody here reads; a threshold of 0 skips it.
                from great_expectations.execution_engine import pandas_execution_engine as _pe

                if hasattr(_pe, "HASH_THRESHOLD"):
                    _pe.HASH_THRESHOLD = 0
            except ImportError:  # pragma: no cover - layout of a future GX
                pass
            # Ephemeral, in-memory stores, no data docs sites (nothing written to disk), no
            # progress bars, no analytics.
            context = gx.get_context(
                mode="ephemeral",
                project_config=DataContextConfig(
                    store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                    analytics_enabled=False,
                    progress_bars=ProgressBarsConfig(globally=False),
                ),
            )
            asset = context.data_sources.add_pandas(name="lakehouse_quality").add_dataframe_asset(
                name="frame"
            )
            _GX_STATE["gx"] = gx
            _GX_STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
        return _GX_STATE["gx"], _GX_STATE["batch_definition"]


def warm_up() -> None:
    """Import GX and build the context now (a few seconds, once per process)."""
    _gx()


# --------------------------------------------------------------------------------------------
# Running a suite
# --------------------------------------------------------------------------------------------

ReferenceValues = Union[set, frozenset, list, tuple, pd.Series, pd.Index, np.ndarray]


@dataclass
class _Item:
    """One column-level (or table-level) piece of a check."""

    label: str  # the column, "a,b" for a compound key, "" for table-level
    engine: str = "great_expectations"
    passed: bool | None = None
    detail: dict = field(default_factory=dict)
    message: str = ""


def run_suite(
    spec: SuiteSpec,
    df: pd.DataFrame,
    *,
    reference: Mapping[str, ReferenceValues] | None = None,
    previous_row_count: int | None = None,
) -> list[CheckOutcome]:
    """Validate ``df`` against ``spec``; one outcome per check, in the spec's order.

    ``reference`` maps a reference name (see ``spec.reference_names``) to the known ids.
    ``previous_row_count`` is the row count of the previous partition (None: none exists).
    Never raises for bad data or a missing column: those become failed outcomes.
    """
    if not isinstance(df, pd.DataFrame) and hasattr(df, "to_pandas"):
        df = df.to_pandas()  # a polars DataFrame or an Arrow table
    reference = reference or {}
    present = set(map(str, df.columns))
    n_rows = int(len(df))
    items: dict[str, list[_Item]] = {c.name: [] for c in spec.checks}
    notes: dict[str, list[str]] = {c.name: [] for c in spec.checks}
    missing: dict[str, list[str]] = {c.name: [] for c in spec.checks}
    expectations: list[Any] = []
    gx = None

    def need(check: Check, cols: Iterable[str]) -> bool:
        lost = [c for c in cols if c not in present]
        missing[check.name] += [c for c in lost if c not in missing[check.name]]
        return not lost

    def expect(check: Check, label: str, cls_name: str, **kwargs: Any) -> None:
        nonlocal gx
        if gx is None:
            gx, _ = _gx()
        cls = getattr(gx.expectations, cls_name)
        expectations.append(cls(**kwargs, meta={"check": check.name, "label": label}))
        items[check.name].append(_Item(label))

    for check in spec.checks:
        if isinstance(check, UniqueKey):
            if need(check, check.columns):
                label = ",".join(check.columns)
                if len(check.columns) == 1:
                    expect(check, label, "ExpectColumnValuesToBeUnique", column=check.columns[0])
                else:
                    expect(check, label, "ExpectCompoundColumnsToBeUnique",
                           column_list=list(check.columns))
        elif isinstance(check, NotNull):
            for col in check.columns:
                if need(check, [col]):
                    expect(check, col, "ExpectColumnValuesToNotBeNull", column=col)
        elif isinstance(check, AcceptedValues):
            for col, values in check.values.items():
                if need(check, [col]):
                    expect(check, col, "ExpectColumnValuesToBeInSet", column=col,
                           value_set=list(values))
        elif isinstance(check, Ranges):
            for col, (lo, hi) in check.bounds.items():
                if need(check, [col]):
                    expect(check, col, "ExpectColumnValuesToBeBetween", column=col,
                           min_value=lo, max_value=hi)
        elif isinstance(check, ReferentialIntegrity):
            for col, ref_name in check.references.items():
                if not need(check, [col]):
                    continue
                if ref_name not in reference or reference[ref_name] is None:
                    items[check.name].append(_Item(
                        col, engine="none", passed=False,
                        detail={"reference": ref_name, "error": "reference set not provided"},
                        message=(f"column '{col}': reference set '{ref_name}' was not provided "
                                 f"to run_suite(reference=...)"),
                    ))
                    continue
                values = _reference_values(reference[ref_name])
                if len(values) <= GX_VALUE_SET_LIMIT:
                    expect(check, col, "ExpectColumnValuesToBeInSet", column=col,
                           value_set=values.tolist())
                    items[check.name][-1].detail["reference"] = ref_name
                    items[check.name][-1].detail["reference_size"] = int(len(values))
                else:
                    # Large reference sets: vectorised pandas isin (see GX_VALUE_SET_LIMIT).
                    items[check.name].append(_pandas_in_set(df, col, ref_name, values))
        elif isinstance(check, RowVolume):
            if previous_row_count is None or previous_row_count <= 0:
                notes[check.name].append(
                    "skipped: no previous partition" if previous_row_count is None
                    else "skipped: the previous partition is empty")
                items[check.name].append(_Item("", engine="none", passed=True, detail={
                    "observed_rows": n_rows, "previous_row_count": previous_row_count,
                    "skipped": True}))
            else:
                lo, hi = check.band
                expect(check, "", "ExpectTableRowCountToBeBetween",
                       min_value=int(math.ceil(previous_row_count * lo)),
                       max_value=int(math.floor(previous_row_count * hi)))
                items[check.name][-1].detail.update({
                    "previous_row_count": int(previous_row_count), "band": [lo, hi]})
        elif isinstance(check, PositiveRatio):
            if need(check, [check.column]):
                lo, hi = check.band
                expect(check, check.column, "ExpectColumnMeanToBeBetween", column=check.column,
                       min_value=lo, max_value=hi)
                items[check.name][-1].detail.update({
                    "expected_share": check.expected_share, "band": [lo, hi],
                    "negatives_per_positive": check.negatives_per_positive})
        else:  # pragma: no cover - a new Check type without a branch here
            raise TypeError(f"unknown check type {type(check).__name__}")

    if expectations:
        _validate_with_gx(spec, df, expectations, items)

    return [_outcome(spec, check, df, items[check.name], missing[check.name],
                     notes[check.name], n_rows) for check in spec.checks]


def _reference_values(values: ReferenceValues) -> np.ndarray:
    if isinstance(values, (pd.Series, pd.Index)):
        return pd.unique(values.dropna().to_numpy())
    if not isinstance(values, np.ndarray) and hasattr(values, "to_numpy"):
        values = values.to_numpy()  # a polars Series or an Arrow array
    if isinstance(values, np.ndarray):
        values = pd.unique(values.ravel())
        return values[pd.notna(values)]
    return np.array([v for v in values if v is not None], dtype=object)


def _pandas_in_set(df: pd.DataFrame, col: str, ref_name: str, values: np.ndarray) -> _Item:
    s = df[col]
    bad = s.notna() & ~s.isin(values)
    n_bad = int(bad.sum())
    n_nonnull = int(s.notna().sum())
    detail: dict[str, Any] = {
        "reference": ref_name,
        "reference_size": int(len(values)),
        "element_count": int(len(s)),
        "unexpected_count": n_bad,
        "unexpected_percent": (100.0 * n_bad / n_nonnull) if n_nonnull else 0.0,
        "examples": _dedupe(s[bad].head(50 * N_EXAMPLES).tolist())[:N_EXAMPLES],
    }
    return _Item(col, engine="pandas", passed=n_bad == 0, detail=detail)


def _validate_with_gx(spec: SuiteSpec, df: pd.DataFrame, expectations: list, items: dict) -> None:
    gx, batch_definition = _gx()
    suite = gx.ExpectationSuite(name=spec.table, expectations=expectations)
    try:
        with _GX_LOCK:  # one validation at a time per process: the GX context is shared
            batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
            result = batch.validate(
                suite,
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
            )
    except Exception as exc:  # GX itself broke: every GX-backed piece fails, naming the error
        for its in items.values():
            for it in its:
                if it.engine == "great_expectations":
                    it.passed = False
                    it.detail["error"] = f"GX validation raised {type(exc).__name__}: {exc}"
        return
    by_key = {}
    for r in result.results:
        meta = r.expectation_config.meta or {}
        by_key[(meta.get("check"), meta.get("label"))] = r
    for check_name, its in items.items():
        for it in its:
            if it.engine != "great_expectations":
                continue
            r = by_key.get((check_name, it.label))
            if r is None:  # pragma: no cover - GX dropped a result
                it.passed, it.message = False, "no validation result came back from GX"
                continue
            res = dict(r.result or {})
            it.passed = bool(r.success)
            err = _exception_message(r.exception_info)
            if err:
                it.passed = False
                it.detail["error"] = err
            for k in ("element_count", "unexpected_count", "unexpected_percent",
                      "missing_count", "observed_value"):
                if k in res:
                    it.detail[k] = res[k]
            if "partial_unexpected_list" in res:
                it.detail["examples"] = _dedupe(res["partial_unexpected_list"])[:N_EXAMPLES]


def _exception_message(info: Any) -> str:
    """GX puts either one exception dict or {metric id: exception dict} in exception_info."""
    if not info:
        return ""
    if isinstance(info, dict) and "raised_exception" in info:
        return str(info.get("exception_message") or "") if info.get("raised_exception") else ""
    msgs = []
    if isinstance(info, dict):
        for v in info.values():
            if isinstance(v, dict) and v.get("raised_exception"):
                m = str(v.get("exception_message") or "exception")
                if m not in msgs:
                    msgs.append(m)
    return "; ".join(msgs)


# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------


def _outcome(spec: SuiteSpec, check: Check, df: pd.DataFrame, its: list[_Item],
             missing_cols: list[str], notes: list[str], n_rows: int) -> CheckOutcome:
    passed = not missing_cols and all(bool(it.passed) for it in its)
    severity = "ERROR" if check.blocking else "WARN"
    meta: dict[str, Any] = {
        "table": spec.table,
        "check": check.name,
        "blocking": check.blocking,
        "rows": n_rows,
    }
    parts: list[str] = []
    for col in missing_cols:
        parts.append(f"column '{col}' is missing from the table "
                     f"(present: {sorted(map(str, df.columns))})")
    if missing_cols:
        meta["missing_columns"] = list(missing_cols)

    if isinstance(check, RowVolume):
        it = its[0] if its else None
        if it is not None:
            d = dict(it.detail)
            d.setdefault("observed_rows", n_rows)
            prev = d.get("previous_row_count")
            if prev:
                d["ratio"] = n_rows / prev
            meta.update(d)
            if it.passed is False:
                lo, hi = d.get("band", check.band)
                parts.append(f"row count: validation error: {d['error']}" if d.get("error") else (
                    f"{n_rows} rows vs {prev} in the previous partition "
                    f"(ratio {n_rows / prev:.2f}, allowed {lo}-{hi})"))
    elif isinstance(check, PositiveRatio):
        it = its[0] if its else None
        if it is not None:
            d = dict(it.detail)
            share = d.pop("observed_value", None)
            meta.update(d)
            meta["observed_value"] = share
            if check.column in df.columns and n_rows:
                meta["positives"] = int((pd.to_numeric(df[check.column], errors="coerce") == 1).sum())
            if it.passed is False:
                lo, hi = check.band
                shown = "none (empty table)" if share is None else f"{float(share):.4f}"
                parts.append(
                    f"column '{check.column}': validation error: {d['error']}" if d.get("error") else (
                    f"column '{check.column}': share of positives {shown} outside "
                    f"[{lo:.4f}, {hi:.4f}] (1/(r+1) = {check.expected_share:.4f} "
                    f"for r = {check.negatives_per_positive:g} negatives per positive)"))
    else:
        details: dict[str, Any] = {}
        examples: dict[str, Any] = {}
        example_rows: dict[str, Any] = {}
        failed: list[str] = []
        total_unexpected = 0
        for it in its:
            d = dict(it.detail)
            d["engine"] = it.engine
            details[it.label] = d
            total_unexpected += int(d.get("unexpected_count") or 0)
            if it.passed:
                continue
            failed.append(it.label)
            rows = _example_rows(spec, check, df, it.label)
            if rows:
                example_rows[it.label] = rows
            ex = d.get("examples") or []
            if isinstance(check, NotNull):
                ex = rows  # the values are all null: the rows say which records
            examples[it.label] = ex
            parts.append(it.message or _describe_item(check, it.label, d, ex))
        meta["columns"] = [it.label for it in its]
        meta["failed_columns"] = failed
        meta["unexpected_count"] = total_unexpected
        if examples:
            meta["examples"] = examples
        if example_rows:
            meta["example_rows"] = example_rows
        meta["details"] = details

    if notes:
        meta["note"] = "; ".join(notes)
    head = f"{spec.table}: check '{check.name}'"
    if passed:
        description = f"{head} passed" + (f" ({'; '.join(notes)})" if notes else "")
    else:
        kind = "blocking" if check.blocking else "warning"
        description = f"{head} FAILED ({kind}): " + "; ".join(parts)
    return CheckOutcome(name=check.name, passed=passed, severity=severity,
                        description=description, metadata=_jsonable(meta),
                        table=spec.table, blocking=check.blocking)


def _describe_item(check: Check, label: str, d: dict, examples: list) -> str:
    if d.get("error"):
        return f"column '{label}': validation error: {d['error']}"
    n = d.get("unexpected_count")
    pct = d.get("unexpected_percent")
    amount = f"{n} row{'' if n == 1 else 's'}" + (f" ({float(pct):.3g}%)" if pct is not None else "")
    eg = f", e.g. {_short(examples)}" if examples else ""
    if isinstance(check, UniqueKey):
        cols = label.split(",")
        what = f"key ({', '.join(cols)})" if len(cols) > 1 else f"key column '{label}'"
        return f"{what}: {amount} share a duplicated key{eg}"
    if isinstance(check, NotNull):
        return f"column '{label}': {amount} are null{eg}"
    if isinstance(check, AcceptedValues):
        return (f"column '{label}': {amount} outside the accepted values "
                f"{_short(list(check.values[label]))}{eg}")
    if isinstance(check, Ranges):
        lo, hi = check.bounds[label]
        return f"column '{label}': {amount} outside [{_side(lo)}, {_side(hi)}]{eg}"
    if isinstance(check, ReferentialIntegrity):
        ref = check.references[label]
        return f"column '{label}': {amount} have ids not found in reference '{ref}'{eg}"
    return f"column '{label}': {amount} unexpected{eg}"  # pragma: no cover


def _example_rows(spec: SuiteSpec, check: Check, df: pd.DataFrame, label: str) -> list[dict]:
    """A few offending rows (key columns + the column), computed with pandas on failure only."""
    try:
        if isinstance(check, UniqueKey):
            cols = label.split(",")
            mask = df.duplicated(subset=cols, keep=False)
            show = cols
        else:
            if label not in df.columns:
                return []
            s = df[label]
            if isinstance(check, NotNull):
                mask = s.isna()
            elif isinstance(check, AcceptedValues):
                mask = s.notna() & ~s.isin(list(check.values[label]))
            elif isinstance(check, Ranges):
                lo, hi = check.bounds[label]
                num = pd.to_numeric(s, errors="coerce")
                mask = pd.Series(False, index=s.index)
                if lo is not None:
                    mask |= num < lo
                if hi is not None:
                    mask |= num > hi
                mask |= s.notna() & num.isna()  # values that are not numbers at all
            else:
                return []
            show = [c for c in spec.key if c in df.columns and c != label] + [label]
        return df.loc[mask.to_numpy(dtype=bool), show].head(N_EXAMPLES).to_dict("records")
    except Exception:  # examples are a courtesy: never let them break a check
        return []


def _side(v: Any) -> str:
    return "open" if v is None else f"{v}"


def _short(values: Sequence, limit: int = N_EXAMPLES) -> str:
    vals = list(values)
    text = ", ".join(repr(_jsonable(v)) for v in vals[:limit])
    return f"[{text}{', ...' if len(vals) > limit else ''}]"


def _dedupe(values: Iterable) -> list:
    out, seen = [], set()
    for v in values:
        try:
            k = repr(sorted(v.items())) if isinstance(v, dict) else repr(v)
        except TypeError:
            k = repr(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def _plain(v: Any) -> Any:
    """One value as a JSON-friendly Python scalar."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, (pd.Timestamp, dt.datetime, dt.date)):
        return v.isoformat()
    if v is pd.NaT or v is pd.NA:
        return None
    if isinstance(v, np.datetime64):
        return str(v)
    return str(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset, np.ndarray)):
        return [_jsonable(x) for x in v]
    return _plain(v)


# --------------------------------------------------------------------------------------------
# Helpers for callers
# --------------------------------------------------------------------------------------------


def blocking_failures(outcomes: Iterable[CheckOutcome]) -> list[CheckOutcome]:
    return [o for o in outcomes if o.blocking and not o.passed]


def format_failures(outcomes: Iterable[CheckOutcome]) -> str:
    return "\n".join(o.description for o in outcomes if not o.passed)


def raise_for_blocking(outcomes: Sequence[CheckOutcome]) -> None:
    """Raise :class:`QualityGateError` if a blocking check failed (for callers outside Dagster)."""
    failed = blocking_failures(outcomes)
    if failed:
        raise QualityGateError(failed[0].table, failed)


__all__ = [
    "AcceptedValues", "BRONZE_BLOCKING", "BRONZE_SUITES", "Check", "CheckOutcome", "GOLD_TABLES",
    "NotNull", "PositiveRatio", "QualityGateError", "Ranges", "ReferentialIntegrity", "RowVolume",
    "SuiteSpec", "UniqueKey", "blocking_failures", "bronze_suite", "format_failures", "gold_suite",
    "raise_for_blocking", "run_suite", "training_examples_suite", "warm_up",
]
