"""Synthetic recommendation frames in the batch-inference shape, for tests and the benchmark."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import numpy as np
import polars as pl

from homefeed.cache import PLATFORMS

ROWS = (("for_you", "For you"), ("morning", "Start your morning with..."),
        ("evening", "End your day with..."), ("recover", "Recover with..."))


def user_id(i: int) -> str:
    return f"u{i:07d}"


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pl.Series:
    """prefix + zero-padded number, vectorized (same format as user_id())."""
    digits = pl.Series(numbers).cast(pl.String).str.zfill(width)
    return pl.select(pl.concat_str(pl.lit(prefix), pl.lit(digits))).to_series()


def synthetic_recommendations(
    n_users: int, *, platforms: Sequence[str] = ("bike", "app"), rows: Sequence[tuple[str, str]] = ROWS,
    k: int = 10, n_classes: int = 5_000, seed: int = 0, model_version: int = 1,
    serve_date: dt.date = dt.date(2026, 10, 31), chunk_users: int = 5_000,
) -> Iterator[pl.DataFrame]:
    """Frames of `chunk_users` users each (whole (user, platform) groups), rows in random order
    so that the publisher's sorting is exercised."""
    rng = np.random.default_rng(seed)
    generated_at = dt.datetime.combine(serve_date, dt.time(3), tzinfo=dt.UTC)
    per_user = len(platforms) * len(rows) * k
    for start in range(0, n_users, chunk_users):
        users = np.arange(start, min(start + chunk_users, n_users))
        n = len(users) * per_user
        uid = _ids("u", np.repeat(users, per_user), 7)
        plat = np.tile(np.repeat(np.asarray(platforms), len(rows) * k), len(users))
        row_idx = np.tile(np.repeat(np.arange(len(rows)), k), len(users) * len(platforms))
        rank = np.tile(np.arange(1, k + 1), n // k)
        # scores descending with rank inside each row
        score = np.sort(rng.random((n // k, k), dtype=np.float32), axis=1)[:, ::-1].ravel()
        cls = rng.integers(0, n_classes, n)
        frame = pl.DataFrame({
            "user_id": uid, "platform": plat,
            "row_id": np.asarray([r[0] for r in rows])[row_idx],
            "row_title": np.asarray([r[1] for r in rows])[row_idx],
            "row_rank": pl.Series(row_idx + 1, dtype=pl.Int32),
            "rank": pl.Series(rank, dtype=pl.Int32),
            "class_id": _ids("c", cls, 5),
            "score": pl.Series(score, dtype=pl.Float32),
        }).select(
            pl.lit(serve_date, pl.Date).alias("serve_date"),
            pl.lit(serve_date - dt.timedelta(days=1), pl.Date).alias("feature_date"),
            pl.all(),
            pl.lit(model_version, pl.Int32).alias("model_version"),
            pl.lit(generated_at, pl.Datetime("us", "UTC")).alias("generated_at"),
        )
        yield frame.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 31)))


def synthetic_popular(*, platforms: Sequence[str] = PLATFORMS, k: int = 20, n_classes: int = 5_000,
                      seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for p in platforms:
        parts.append(pl.DataFrame({
            "platform": [p] * k, "rank": pl.Series(np.arange(1, k + 1), dtype=pl.Int32),
            "class_id": [f"c{c:05d}" for c in rng.choice(n_classes, k, replace=False)],
            "score": pl.Series(np.sort(rng.random(k, dtype=np.float32))[::-1], dtype=pl.Float32),
        }))
    return pl.concat(parts)


DISCIPLINES = ("cycling", "running", "strength", "yoga", "meditation")
INSTRUCTORS = ("Leanne Lee", "Matt Chen", "Sam Love", "Alex Moreno")


def synthetic_classes(n_classes: int = 5_000, *, serve_date: dt.date = dt.date(2026, 10, 31),
                      seed: int = 0) -> pl.DataFrame:
    """A catalogue for the synthetic class ids (`payload.class_fields`' input): class_id, title,
    instructor, discipline, duration_min, release_date (some within the "new" week)."""
    rng = np.random.default_rng(seed)
    disc = rng.choice(len(DISCIPLINES), n_classes)
    minutes = rng.choice(np.array([10, 20, 30, 45, 60]), n_classes)
    age = rng.integers(0, 60, n_classes)
    return pl.DataFrame({
        "class_id": _ids("c", np.arange(n_classes), 5),
        "title": [f"{m} min {DISCIPLINES[d].capitalize()}" for m, d in zip(minutes, disc)],
        "instructor": np.asarray(INSTRUCTORS)[rng.choice(len(INSTRUCTORS), n_classes)],
        "discipline": np.asarray(DISCIPLINES)[disc],
        "duration_min": pl.Series(minutes, dtype=pl.Int32),
        "release_date": pl.Series([serve_date - dt.timedelta(days=int(a)) for a in age], dtype=pl.Date),
    })
