"""Items of an iterator prepared ahead on a background thread, so reading and encoding the next
batches overlaps the training step (polars, numpy and torch release the GIL in their heavy parts).

`prefetch(items, depth)` yields exactly what iterating `items` yields, in the same order (one
producer thread, one FIFO queue), so training stays reproducible. At most `depth` finished items
wait in the queue (plus the one the producer is building). An exception in the producer is
raised in the consumer, with its traceback; when the consumer stops early (the generator is
closed or dropped), the producer stops after the item it is building and its thread ends.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.05  # how often a producer blocked on a full queue checks whether to stop


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2, *, name: str = "prefetch") -> Iterator[T]:
    """Iterate `items` on a thread named `name`, at most `depth` items ahead (depth >= 1).

    Nothing starts until the first item is asked for."""
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    return _prefetched(items, depth, name)


def _prefetched(items: Iterable[T], depth: int, name: str) -> Iterator[T]:
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failure(e))
        finally:
            close = getattr(source, "close", None)
            if close is not None:  # a generator's own cleanup runs here, in its thread
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # empty the queue so a blocked producer sees the stop
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(_POLL_S)


__all__ = ["prefetch"]
