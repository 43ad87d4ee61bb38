"""A tiny published cache and the preview on it, shared by the page tests and the browser test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from homefeed.cache import CacheStore, CacheVersion
from homefeed.preview import PreviewSource, create_preview_app
from homefeed.synthetic import synthetic_classes, synthetic_popular, synthetic_recommendations
from tests.homefeed.data import SERVE_DATE
from tests.homefeed.test_service import serving

N_CLASSES = 60
GONE = "c00007"  # in the rows, not in the catalogue
HISTORY = [{"date": "2026-10-30", "hour": 18, "platform": "bike", "title": "30 min Pop Ride",
            "instructor": "Leanne Lee", "discipline": "cycling"}]


def publish(root: Path) -> CacheVersion:
    frames = list(synthetic_recommendations(6, k=4, seed=4, n_classes=N_CLASSES, model_version=3,
                                            serve_date=SERVE_DATE))
    frames[0] = frames[0].with_columns(  # make sure the lost class is on u0000000's bike screen
        pl.when((pl.col("user_id") == "u0000000") & (pl.col("platform") == "bike") & (pl.col("row_id") == "for_you")
                & (pl.col("rank") == 1)).then(pl.lit(GONE)).otherwise(pl.col("class_id")).alias("class_id"))
    classes = synthetic_classes(N_CLASSES, serve_date=SERVE_DATE).filter(pl.col("class_id") != GONE)
    return CacheStore(root).publish(frames, synthetic_popular(k=5, n_classes=N_CLASSES, seed=9),
                                    serve_date=SERVE_DATE, model_version=3, classes=classes)


def source() -> PreviewSource:
    return PreviewSource(
        history=lambda user, n: HISTORY[:n] if user == "u0000000" else [],
        favourites=lambda users: {u: {"instructors": ["Leanne Lee"], "disciplines": ["cycling", "yoga"]}
                                  for u in users},
        users=lambda: ["u0000000"])


@contextlib.contextmanager
def preview_site(root: Path) -> Iterator[tuple[str, CacheVersion]]:
    version = publish(root)
    with serving(create_preview_app(root, source())) as base:
        yield base, version
