"""Polars' allocator (jemalloc) in the processes that train: freed pages kept for 30 s.

Polars returns the pages its queries freed to the OS within about a second
(`dirty_decay_ms:500,muzzy_decay_ms:1000`, set when polars is imported). Training reads one day,
then steps on it for longer than that, so every day's read and join page-faulted its memory
back: 1.27-1.44 us a row inside an epoch against 0.84-1.03 with them kept for 30 s (demo, 2
cores, docs/benchmarks.md "The allocator"). A decay of 30 s keeps them from one day to the
next (a day of 10x the demo's rows steps for ~4 s: about 4% of the pages go) and still returns
them after training.

jemalloc reads `_RJEM_MALLOC_CONF` once, when polars is imported, so the setting travels in the
environment: `allocator_env()` for a process to start (Ray Train workers), `keep_freed_pages()`
in an entry point (this process, if it has not imported polars yet, and every process it starts).
A decay the user set in `_RJEM_MALLOC_CONF` is kept. No polars import here.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

VAR = "_RJEM_MALLOC_CONF"
DECAY_MS = 30_000
OPTIONS = f"dirty_decay_ms:{DECAY_MS},muzzy_decay_ms:{DECAY_MS}"
# what polars writes first (its own default); options after it are the user's or ours
_POLARS_DEFAULT = "dirty_decay_ms:500,muzzy_decay_ms:1000"


def allocator_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`{_RJEM_MALLOC_CONF: ...}` for a process to start: the current value with OPTIONS last
    (jemalloc takes the last of a repeated option), or the current one where the user set a
    decay of their own."""
    current = environ.get(VAR, "")
    # polars' default is written again by each process that imports polars: not the user's
    if "decay_ms" in current.replace(_POLARS_DEFAULT, ""):
        return {VAR: current}
    return {VAR: f"{current},{OPTIONS}" if current else OPTIONS}


def keep_freed_pages() -> bool:
    """Put `allocator_env()` in this process's environment (so every process it starts has it).
    Returns whether it applies to this process as well: only if polars is not imported yet."""
    os.environ.update(allocator_env())
    return "polars" not in sys.modules


__all__ = ["DECAY_MS", "OPTIONS", "VAR", "allocator_env", "keep_freed_pages"]
