"""A check's outcome from its validated pieces, and the text that says what failed: how many rows,
example values and rows, the columns the frame lacks; the metadata made JSON-able."""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

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
from lakehouse.quality.config import N_EXAMPLES

if TYPE_CHECKING:  # pragma: no cover
    from lakehouse.quality.engine import Item


def outcome_of(spec: SuiteSpec, check: Check, df: pd.DataFrame, its: list[Item],
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


def dedupe(values: Iterable) -> list:
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


__all__ = ["dedupe", "outcome_of"]
