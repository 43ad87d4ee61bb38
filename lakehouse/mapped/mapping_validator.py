"""The type checks of a mapping file's fields: each one records a problem (field path, what was
expected, line) and returns None so that the parse goes on, and one MappingError names every
problem of the file (:meth:`Validator.raise_errors`)."""

import difflib
import re
from typing import Any, Callable, Mapping

from lakehouse.mapped.mapping import FIELDS, FORMATS, MappingError, bronze_name


_HINTS = {
    "name": "a label for the dataset, e.g. listening",
    "source": "the folder or s3://bucket/prefix holding the files",
    "interactions": "the interaction log: path, user, item, timestamp",
    "path": "a file, folder or glob under `source`",
    "interactions.user": "the user id column",
    "interactions.item": "the item id column",
    "timestamp": "column and unit of the event time",
    "column": "a column name",
    "unit": "s|ms|us|ns|iso or a strptime format",
    "take": "the event value(s) that mean a positive interaction, e.g. [play]",
    "positive_threshold": "ratings at or above it count as a take",
    "key": "the id column joined to the interactions",
}


class Validator:
    """Type checks that collect problems as (field path, what was expected); a check that fails
    returns None and the parse goes on, so that one MappingError names every problem."""

    def __init__(self, origin: str, lines: Mapping[str, int] | None = None):
        self.origin = origin
        self.lines = dict(lines or {})
        self.problems: list[str] = []
        self._lines: list[int] = []  # each problem's line (0: none), to list them in file order

    def fail(self, where: str, what: str, at: str | None = None) -> None:
        """Record a problem of field `where`; `at` is the path whose line is shown (default
        `where`, else its nearest parent in the file)."""
        text = f"{where + ': ' if where else ''}{what}"
        line = self._line(at or where)
        problem = f"{text} (line {line})" if line else text
        if problem not in self.problems:
            self.problems.append(problem)
            self._lines.append(line or 0)

    def _line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = re.sub(r"(\[\d+\]|\.[^.\[]*|^[^.\[]*)$", "", path)
        return None

    def raise_errors(self) -> None:
        if not self.problems:
            return
        if len(self.problems) == 1:
            raise MappingError(f"{self.origin}: {self.problems[0]}")
        in_order = [p for _, _, p in sorted(zip(self._lines, range(len(self.problems)), self.problems))]
        listed = "\n".join(f"  - {p}" for p in in_order)
        raise MappingError(f"{self.origin}: {len(self.problems)} problems in the mapping file; fix them "
                           f"all and re-run:\n{listed}")

    def opt(self, section: dict, key: str, check: Callable[[Any, str], Any], where: str | None = None):
        """`check` of section[key] when present (a missing required key is already recorded)."""
        value = section.get(key)
        return None if value is None else check(value, where or key)

    def mapping(self, value: Any, where: str) -> dict | None:
        required, optional = FIELDS[where]
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping with keys {', '.join(required + optional)}, "
                             f"got {_kind(value)}")
            return None
        valid = required + optional
        prefix = f"{where}." if where else ""
        for key in value:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(where, f"unknown key {key!r}{hint}; valid keys: {', '.join(valid)}",
                          at=f"{prefix}{key}")
        for key in required:
            if value.get(key) is None:
                hint = _HINTS.get(f"{prefix}{key}") or _HINTS.get(key)
                self.fail(f"{prefix}{key}", f"missing required field{f' ({hint})' if hint else ''}")
        return value

    def string(self, value: Any, where: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected a non-empty string, got {_kind(value)}")
            return None
        return value.strip()

    def column(self, value: Any, where: str) -> str | None:
        if not isinstance(value, str):
            self.fail(where, f"expected a column name, got {_kind(value)}")
            return None
        if not bronze_name(value) or any(ch in value for ch in "\n\r\t\x00"):
            self.fail(where, f"{value!r} is not a usable column name; expected a name with at least "
                             f"one letter or digit, on one line")
            return None
        return value

    def columns(self, value: Any, where: str) -> tuple[str, ...]:
        """The valid column names of a list (each invalid one is recorded)."""
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(where, f"expected a list of column names such as [a, b], got {_kind(value)}")
            return ()
        return tuple(c for i, x in enumerate(value) if (c := self.column(x, f"{where}[{i}]")) is not None)

    def values(self, value: Any, where: str) -> tuple[str, ...] | None:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(where, f"expected a list of event values such as [play], got {_kind(value)}")
            return None
        out = []
        for i, x in enumerate(value):
            if isinstance(x, bool) or not isinstance(x, (str, int)):
                self.fail(f"{where}[{i}]", f"expected a string (or integer) event value, got {_kind(x)}")
                continue
            out.append(str(x))
        return tuple(out) if len(out) == len(value) else None

    def number(self, value: Any, where: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, got {_kind(value)}")
            return None
        return float(value)

    def path(self, value: Any, where: str) -> str | None:
        return self.string(value, where)

    def format(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if value not in FORMATS:
            self.fail(where, f"{value!r} is not a supported format; expected one of "
                             f"{'|'.join(FORMATS)} (or leave it out to use the file suffix)")
            return None
        return value

    def delimiter(self, value: Any, where: str) -> str | None:
        if not isinstance(value, str) or len(value) != 1:
            self.fail(where, f"expected a single character such as \",\", \";\" or \"\\t\", got {_kind(value)}")
            return None
        return value

    def distinct(self, where: str, fields: list[tuple[str, str | None]]) -> None:
        seen: dict[str, str] = {}
        for path, col in fields:
            if col is None:
                continue
            low = bronze_name(col)
            if low in seen:
                self.fail(where, f"column {col!r} is declared twice (as {low!r}): at {seen[low]} and "
                                 f"at {path}; each source column maps to one field", at=path)
            seen.setdefault(low, path)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (list, dict)):
        return f"a {'list' if isinstance(value, list) else 'mapping'} ({value!r})"
    return f"{type(value).__name__} {value!r}"


__all__ = ["Validator"]
