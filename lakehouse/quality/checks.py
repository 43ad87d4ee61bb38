"""The check kinds a suite is made of (unique key, not null, accepted values, ranges, referential
integrity, row volume, positive ratio), the suite, a check's outcome, and what callers do with
outcomes (the blocking failures, their texts, raising :class:`QualityGateError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

from lakehouse.quality.config import POSITIVE_RATIO_TOLERANCE, VOLUME_BAND


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
    "AcceptedValues", "Check", "CheckOutcome", "NotNull", "PositiveRatio", "QualityGateError", "Ranges",
    "ReferentialIntegrity", "RowVolume", "SuiteSpec", "UniqueKey", "blocking_failures", "format_failures",
    "raise_for_blocking",
]
