"""The context a list assumes: what the evaluation's lists and the served rows score under.

A "For you" list (and row) assumes the platform, an hour (the user's usual hour there unless the
caller gives one), the day's weekday and no previous class in the session. The recent-state row
("Recover from yesterday's ride") assumes the class right after the user's last workout.
Mapped data (an interaction log imported through a mapping file): the platform, an hour, the
weekday, and ctx_<name> = the user's last_ctx_<name> (the context of their latest take).

`ml.evaluation` (offline lists) and `ml.inference` (the daily rows) both build their frames
here, through `Dataset.list_context` (`ml.datasets` picks the one of its data), so the model is
evaluated under the context it is served under.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml.features import LAST_CTX_PREFIX


def usual_hour(users: pl.DataFrame, platform: str) -> pl.Series:
    """The user's usual hour on the platform (fitness: usual_hour_<platform>; mapped data has
    one usual_hour over every platform), rounded, null where there is none."""
    col = f"usual_hour_{platform}"
    if col not in users.columns:
        col = "usual_hour"
    if col not in users.columns:
        return pl.Series("hour", [None] * users.height, dtype=pl.Int32)
    return users[col].cast(pl.Float64).round().cast(pl.Int32)


def _hour_expr(users: pl.DataFrame, platform: str, hour: int | pl.Series | None) -> pl.Expr:
    hours = usual_hour(users, platform) if hour is None else hour
    return pl.lit(hours, pl.Int32) if isinstance(hours, int) else hours.cast(pl.Int32)


def fitness_list_context(users: pl.DataFrame, platform: str, day: dt.date,
                         hour: int | pl.Series | None = None) -> pl.DataFrame:
    """The context a fitness "For you" list assumes: the platform, an hour (default: the user's
    usual hour there), the weekday, and no previous class in the session."""
    dow = day.isoweekday()
    return users.with_columns(
        pl.lit(platform).alias("platform"),
        _hour_expr(users, platform, hour).alias("hour_of_day"),
        pl.lit(dow, pl.Int32).alias("day_of_week"),
        pl.lit(dow >= 6).alias("is_weekend"),
        pl.lit(None, pl.Utf8).alias("prev_discipline"),
        pl.lit(None, pl.Utf8).alias("prev_body_focus"),
        pl.lit(None, pl.Int32).alias("prev_duration_min"),
        pl.lit(None, pl.Float64).alias("minutes_since_prev"),
        pl.lit(1, pl.Int32).alias("position_in_session"),
        pl.lit(day).alias("event_date"),
    )


def mapped_list_context(users: pl.DataFrame, platform: str, day: dt.date,
                        hour: int | pl.Series | None = None) -> pl.DataFrame:
    """The context a mapped list assumes: the platform, an hour (default: the user's usual
    hour), the weekday of the day, and ctx_<name> = the user's last_ctx_<name> (the context of
    their latest take; null for a user without one)."""
    dow = day.isoweekday()
    ctx = [pl.col(c).alias("ctx_" + c[len(LAST_CTX_PREFIX):])
           for c in users.columns if c.startswith(LAST_CTX_PREFIX)]
    return users.with_columns(
        pl.lit(platform).alias("platform"),
        _hour_expr(users, platform, hour).alias("hour_of_day"),
        pl.lit(dow, pl.Int32).alias("day_of_week"),
        pl.lit(dow >= 6).alias("is_weekend"),
        *ctx,
        pl.lit(day).alias("event_date"),
    )


def after_last_workout(context: pl.DataFrame) -> pl.DataFrame:
    """A fitness list context (`fitness_list_context`) as the class right after the user's last workout:
    prev_* = last_*, 5 minutes later, second in the session (the recent-state row)."""
    return context.with_columns(
        pl.col("last_discipline").alias("prev_discipline"),
        pl.col("last_body_focus").alias("prev_body_focus"),
        pl.col("last_duration_min").cast(pl.Int32).alias("prev_duration_min"),
        pl.lit(5.0).alias("minutes_since_prev"),
        pl.lit(2, pl.Int32).alias("position_in_session"),
    )


__all__ = ["after_last_workout", "fitness_list_context", "mapped_list_context", "usual_hour"]
