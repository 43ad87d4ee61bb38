"""Expected payload contents, computed row by row in Python from the input frames rather than
with the publisher's polars code, so a bug there cannot agree with itself."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

SERVE_DATE = dt.date(2026, 10, 31)
Rows = tuple  # ((row_id, title, ((rank, class_id, float32 score), ...)), ...) in screen order


def f32(x: float) -> float:
    return float(np.float32(x))


def expected_rows(frames: list[pl.DataFrame]) -> dict[tuple[str, str], Rows]:
    acc: dict[tuple[str, str], dict[tuple[int, str], tuple[str, list]]] = {}
    for frame in frames:
        for r in frame.iter_rows(named=True):
            rows = acc.setdefault((r["user_id"], r["platform"]), {})
            _, items = rows.setdefault((r["row_rank"], r["row_id"]), (r["row_title"], []))
            items.append((r["rank"], r["class_id"], f32(r["score"])))
    return {key: tuple((rid, title, tuple(sorted(items))) for (_, rid), (title, items) in sorted(rows.items()))
            for key, rows in acc.items()}


def payload_rows(payload: dict) -> Rows:
    return tuple((r["row_id"], r["title"], tuple((i["rank"], i["class_id"], f32(i["score"])) for i in r["items"]))
                 for r in payload["rows"])
