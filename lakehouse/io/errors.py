"""Storage errors as people read them: terminal colours stripped from object_store's error chains
(:func:`clean`), and a write the storage refused re-raised naming the table, the OS reason and what
the run had committed before it (:func:`refused_writes_named`)."""

from __future__ import annotations

import contextlib
import re
from typing import Sequence


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def clean(text: str) -> str:
    """Without terminal colour codes (object_store's error chains carry them)."""
    return _ANSI.sub("", text)


class StorageNotWritableError(RuntimeError):
    """The lakehouse storage refused a write (read-only disk, no permission): nothing is wrong
    with the data, and re-running the same days once the storage is writable is safe."""


# ---------------------------------------------------------------- refused writes

# deltalake reports a refused write as OSError or DeltaError, with the OS reason buried in a
# chain of Rust messages (and ANSI colours); these markers find it in any of them.
_READ_ONLY = ("os error 30", "read-only file system", "readonlyfilesystem")
_NO_PERMISSION = ("os error 13", "permission denied", "permissiondenied")


@contextlib.contextmanager
def refused_writes_named(uri: str, committed: Sequence[str] = ()):
    """Re-raise a write the storage refused as :class:`StorageNotWritableError` naming `uri`,
    the OS reason, and what this run had committed before (other errors pass through)."""
    try:
        yield
    except Exception as exc:
        text = " ".join(clean(str(exc)).split())
        low = text.lower()
        if any(m in low for m in _READ_ONLY):
            why = "is read-only"
        elif any(m in low for m in _NO_PERMISSION):
            why = "is not writable (permission denied)"
        else:
            raise
        text = text.replace(" ↳ ", ": ")
        done = ", ".join(committed) if committed else "nothing"
        raise StorageNotWritableError(
            f"cannot write {uri}: the storage {why} ({text}). Committed by this run before it: "
            f"{done}. Make the storage writable and re-run the same day(s); the ingest replaces "
            f"whole days, so a re-run is safe.") from exc


__all__ = ["StorageNotWritableError", "clean", "refused_writes_named"]
