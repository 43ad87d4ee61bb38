"""Running a suite: every check of it in ONE Great Expectations validation (one ephemeral context
per process, one batch per call), so a 1M-row frame takes seconds; large reference sets are
checked with Arrow's ``is_in`` instead (``config.GX_VALUE_SET_LIMIT``). Great
Expectations is imported lazily, on the first :func:`run_suite`: importing this module to declare
asset checks costs nothing. A column a suite names but the frame lacks does not crash the run: the
check that needs it fails and its description names the missing column."""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.quality.checks import (
    AcceptedValues,
    Check,
    CheckOutcome,
    NotNull,
    PositiveRatio,
    Ranges,
    ReferentialIntegrity,
    RowVolume,
    SuiteSpec,
    UniqueKey,
)
from lakehouse.quality.config import GX_VALUE_SET_LIMIT, N_EXAMPLES
from lakehouse.quality.failures import dedupe, outcome_of

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


def warm_up_in_background() -> None:
    """Start `warm_up` on a daemon thread and return: a caller that reads its tables first
    overlaps the import (pure Python) with the reads (native, GIL released); the first
    `run_suite` waits on the same lock if the import is not done."""
    if not _GX_STATE:
        threading.Thread(target=_warm_up_quietly, name="gx-warm-up", daemon=True).start()


def _warm_up_quietly() -> None:
    try:
        _gx()
    except Exception:  # noqa: BLE001 - the first run_suite imports again and raises it there
        pass


# --------------------------------------------------------------------------------------------
# Running a suite
# --------------------------------------------------------------------------------------------

# also a polars Series or an Arrow array (anything with `to_arrow`, or an Arrow array itself)
ReferenceValues = Union[set, frozenset, list, tuple, pd.Series, pd.Index, np.ndarray, pa.Array]


@dataclass
class Item:
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
    items: dict[str, list[Item]] = {c.name: [] for c in spec.checks}
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
        items[check.name].append(Item(label))

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
                    items[check.name].append(Item(
                        col, engine="none", passed=False,
                        detail={"reference": ref_name, "error": "reference set not provided"},
                        message=(f"column '{col}': reference set '{ref_name}' was not provided "
                                 f"to run_suite(reference=...)"),
                    ))
                    continue
                values = _reference_values(reference[ref_name])
                if len(values) <= GX_VALUE_SET_LIMIT:
                    expect(check, col, "ExpectColumnValuesToBeInSet", column=col,
                           value_set=values.to_pylist())
                    items[check.name][-1].detail["reference"] = ref_name
                    items[check.name][-1].detail["reference_size"] = int(len(values))
                else:
                    # Large reference sets: Arrow's is_in (see GX_VALUE_SET_LIMIT).
                    items[check.name].append(_pandas_in_set(df, col, ref_name, values))
        elif isinstance(check, RowVolume):
            if previous_row_count is None or previous_row_count <= 0:
                notes[check.name].append(
                    "skipped: no previous partition" if previous_row_count is None
                    else "skipped: the previous partition is empty")
                items[check.name].append(Item("", engine="none", passed=True, detail={
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

    return [outcome_of(spec, check, df, items[check.name], missing[check.name],
                     notes[check.name], n_rows) for check in spec.checks]


def _reference_values(values: ReferenceValues) -> pa.Array:
    """The distinct non-null reference values as an Arrow array: hashed in Arrow, without a Python
    object per value (a bronze reference is every known user id: 1.2M of them at `large`)."""
    if hasattr(values, "to_arrow"):  # a polars Series
        values = values.to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        if isinstance(values, (pd.Series, pd.Index, np.ndarray)):
            values = pa.array(np.asarray(values).ravel(), from_pandas=True)
        else:
            values = pa.array([v for v in values if v is not None])
    return pc.unique(values.drop_null())


def _pandas_in_set(df: pd.DataFrame, col: str, ref_name: str, values: pa.Array) -> Item:
    s = df[col]
    notna = s.notna().to_numpy()
    try:  # Arrow's is_in: pandas' isin of an Arrow-backed string column builds a scalar per value
        col_arr = pa.array(s, from_pandas=True)
        inside = pc.is_in(col_arr, value_set=values.cast(col_arr.type)).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):  # e.g. mixed types
        inside = s.isin(values.to_numpy(zero_copy_only=False)).to_numpy()
    bad = notna & ~inside
    n_bad = int(bad.sum())
    n_nonnull = int(notna.sum())
    detail: dict[str, Any] = {
        "reference": ref_name,
        "reference_size": int(len(values)),
        "element_count": int(len(s)),
        "unexpected_count": n_bad,
        "unexpected_percent": (100.0 * n_bad / n_nonnull) if n_nonnull else 0.0,
        "examples": dedupe(s[bad].head(50 * N_EXAMPLES).tolist())[:N_EXAMPLES],
    }
    return Item(col, engine="pandas", passed=n_bad == 0, detail=detail)


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
                it.detail["examples"] = dedupe(res["partial_unexpected_list"])[:N_EXAMPLES]


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


__all__ = ["ReferenceValues", "run_suite", "warm_up", "warm_up_in_background"]
