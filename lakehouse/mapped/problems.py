"""The problems of a mapped import's source files, merged over their batches and worded once.

Each source file gets a :class:`FileChecks`: the batches of the file are converted one after the
other (:func:`lakehouse.mapped.checks.interactions_batch`, ``side_batch``), and every problem found
is merged into it, so a problem is reported once per file and column, with its row count over the
whole file and the first example row (its number counts data rows from 1, after a CSV header).
Problems whose wording depends on the whole file (mixed timestamp formats: some values parse and
others do not, perhaps in another batch) are kept as observations and worded by
:meth:`FileChecks.problems` after the last batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import polars as pl

from lakehouse.mapped.mapping import TimestampSpec
from lakehouse.mapped.timestamps import UNIT_NAMES, parse_iso, suggest_unit

EXAMPLE_VALUE_CHARS = 60  # longer values are cut in example rows


# ---------------------------------------------------------------- problems

@dataclass
class Problem:
    file: str
    column: str | None
    what: str
    rows: int = 0
    example: str = ""

    def __str__(self) -> str:
        col = f"column {self.column!r} " if self.column else ""
        n = f" [{self.rows} row(s)]" if self.rows > 1 else ""
        ex = f"; e.g. {self.example}" if self.example else ""
        return f"{self.file}: {col}{self.what}{n}{ex}"


def _value(v) -> str:
    text = "null" if v is None else repr(v)
    return text if len(text) <= EXAMPLE_VALUE_CHARS else text[:EXAMPLE_VALUE_CHARS - 3] + "..."


def format_row(row: dict, shown: Sequence[str]) -> str:
    """'row 5: listener='L1', ts=1788...' from a batch row (with its `_row`)."""
    parts = ", ".join(f"{c}={_value(row.get(c))}" for c in shown)
    return f"row {row['_row']}: {parts}"


@dataclass
class _Unparsed:
    """Timestamps of one column that did not parse, over all batches of a file: whether others
    did (in any batch) decides between 'mixed formats' and 'not this unit'."""

    column: str
    spec: TimestampSpec
    label: str
    rows: int = 0
    example: str = ""
    first_text: str = ""
    first_number: float | None = None
    any_number: bool = False
    all_numbers: bool = True
    parsed_example: str = ""  # a row that did parse, if any


class FileChecks:
    """The problems of one source file, merged over its batches."""

    def __init__(self, uri: str, shown: Sequence[str]):
        self.uri = uri
        self.shown = list(shown)  # the mapped columns, in mapping order, for example rows
        self._found: dict[tuple[str | None, str], Problem | _Unparsed] = {}
        self._secondary: set[tuple[str | None, str]] = set()
        self.missing: list[Problem] = []  # mapped columns the file lacks

    @property
    def found_any(self) -> bool:
        """Has any problem been found (the import will fail, whatever the wording)?"""
        return bool(self.missing) or any(not isinstance(f, _Unparsed) or f.rows for f in self._found.values())

    def row(self, df: pl.DataFrame, index: int) -> str:
        return format_row(df.row(index, named=True), self.shown)

    def add(self, df: pl.DataFrame, column: str | None, kind: str, what: str, mask: pl.Series,
            other: pl.Series | None = None, other_what: str = "", secondary: bool = False) -> None:
        """Count the rows of `mask` as problem `kind` of `column`; the first batch that has one
        gives the wording and the example (and `other`'s first row as a counter-example)."""
        n = int(mask.sum())
        if n == 0:
            return
        key = (column, kind)
        found = self._found.get(key)
        if found is None:
            ex = self.row(df, int(mask.arg_true()[0]))
            if other is not None and other.any():
                ex += f" (while {self.row(df, int(other.arg_true()[0]))} {other_what})"
            self._found[key] = Problem(self.uri, column, what, n, ex)
            if secondary:
                self._secondary.add(key)
        else:
            found.rows += n

    def unparsed(self, df: pl.DataFrame, spec: TimestampSpec, label: str, text: pl.Series,
                 failed: pl.Series, parsed: pl.Series) -> None:
        """Record a batch's timestamps that did not parse (`failed`) and those that did."""
        key = (spec.column, "unparsed")
        obs = self._found.get(key)
        if failed.any():
            if obs is None:
                obs = self._found[key] = _Unparsed(spec.column, spec, label)
            bad = text.filter(failed)
            numbers = bad.cast(pl.Float64, strict=False)
            if not obs.rows:
                obs.example = self.row(df, int(failed.arg_true()[0]))
                obs.first_text = bad[0]
                obs.first_number = numbers[0]
            obs.rows += int(failed.sum())
            obs.any_number |= bool(numbers.is_not_null().any())
            obs.all_numbers &= bool(numbers.is_not_null().all())
        if parsed.any():
            if obs is None:  # kept in case a later batch fails to parse
                obs = self._found[key] = _Unparsed(spec.column, spec, label)
            if not obs.parsed_example:
                obs.parsed_example = self.row(df, int(parsed.arg_true()[0]))

    def problems(self) -> list[Problem]:
        """The file's problems once every batch is checked: a missing column alone (the rest
        follows from it); a timestamp's secondary findings only when nothing else is wrong with it."""
        if self.missing:
            return list(self.missing)
        primary = {key[0] for key, found in self._found.items() if key not in self._secondary
                   and (not isinstance(found, _Unparsed) or found.rows)}
        out = []
        for key, found in self._found.items():
            if isinstance(found, _Unparsed):
                if found.rows:
                    out.append(_word_unparsed(self.uri, found))
            elif key not in self._secondary or key[0] not in primary:
                out.append(found)
        return out


def _word_unparsed(uri: str, obs: _Unparsed) -> Problem:
    spec, label = obs.spec, obs.label
    if spec.is_epoch:
        if obs.parsed_example:
            return Problem(uri, spec.column, f"{label} mixed timestamp formats: some values are not epoch "
                                             f"numbers", obs.rows,
                           f"{obs.example} (while {obs.parsed_example} is a number)")
        iso = parse_iso(pl.Series([obs.first_text]), spec.timezone)[0].is_not_null().all()
        return Problem(uri, spec.column, f"{label} values are not epoch {UNIT_NAMES[spec.unit]}"
                                         + (": they look like ISO-8601 text, is the unit iso?" if iso
                                            else "; use a strptime format as the unit for other text"),
                       obs.rows, obs.example)
    if spec.is_iso:
        expected, not_expected, is_expected = "ISO-8601 text", "are not ISO-8601 text", "is"
    else:
        expected = f"the format {spec.unit!r}"
        not_expected, is_expected = f"do not match {expected}", "matches"
    if obs.parsed_example:
        what = (f"{label} mixed timestamp formats: some values {not_expected}"
                + (" (epoch numbers among text timestamps)" if obs.any_number else ""))
        return Problem(uri, spec.column, what, obs.rows,
                       f"{obs.example} (while {obs.parsed_example} {is_expected} {expected})")
    if obs.all_numbers:
        hint = suggest_unit(float(obs.first_number))
        return Problem(uri, spec.column, f"{label} values are epoch numbers, not {expected}"
                                         + (f": is the unit {hint}?" if hint else ""), obs.rows, obs.example)
    hint = (" (it may be ISO-8601: is the unit iso?)" if not spec.is_iso
            and parse_iso(pl.Series([obs.first_text]), spec.timezone)[0].is_not_null().all()
            else "; set the unit to a strptime format such as \"%d/%m/%Y %H:%M\"" if spec.is_iso else "")
    return Problem(uri, spec.column, f"{label} values {not_expected}{hint}", obs.rows, obs.example)


def check_columns(fc: FileChecks, columns: Sequence[str], needed: dict[str, str]) -> bool:
    """Record the mapped columns the file lacks; True when it has them all."""
    missing = [c for c in needed if c not in columns]
    listed = ", ".join(c for c in columns if c != "_row") or "none"
    fc.missing = [Problem(fc.uri, c, f"({needed[c]}): is not in the file; its columns are: {listed}")
                  for c in missing]
    return not missing


__all__ = ["FileChecks", "Problem", "check_columns", "format_row"]
