"""The oracle ranker: the simulator's true preferences, for data a simulator made.

The simulator leaves `<landing>/_simulator/config.json` (`export.write_config`); from it the true
preferences are rebuilt exactly, and each user's state at the start of a day is rebuilt from the
workouts before that day (what an analyst could compute; it equals the simulated state). The
oracle then ranks the same candidates a model sees, knowing only what a daily batch list knows
(see `truth.TruePreferences.oracle_scores`). Data without that file has no oracle:
`load_oracle` returns None and the evaluation says so.

`OracleRanker` is a ranker by its shape: a `name` and `score(batch) -> [users, candidates]`,
the structural interface of `ml.rankers.Ranker`. This package imports nothing of the pipeline
(tests/test_layout.py): the caller hands it the workouts to rebuild the state from (a lazy
frame of the bronze `workouts` table) and the lists to score.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Callable, Protocol

import numpy as np
import polars as pl

from .config import SimConfig
from .export import CONFIG_PATH, resolve


class ListLike(Protocol):
    """What the oracle reads of a list batch (`ml.lists.ListBatch` has it)."""

    day: dt.date
    platform: str
    users: pl.DataFrame  # user_id, one row per list
    classes: pl.DataFrame  # class_id, one row per candidate


def read_simulator_config(landing_uri: str) -> dict | None:
    """The simulator's settings from the landing zone (a folder or s3://...; S3 settings from the
    environment, as the simulator wrote them), or None when no simulator wrote them."""
    try:
        fs, root = resolve(landing_uri)
        with fs.open_input_stream(f"{root}/{CONFIG_PATH}") as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError):
        return None


class OracleRanker:
    """Ranks a list's candidates by the simulator's true take probability for each user.

    workouts: () -> lazy frame of the observed workouts (user_id, class_id, start_ts, minutes;
    the bronze `workouts` table), read per evaluated day up to its start.
    """

    name = "oracle"

    def __init__(self, config: dict, workouts: Callable[[], pl.LazyFrame], n_samples: int = 16) -> None:
        self.cfg = SimConfig.from_dict(config)
        self.workouts = workouts
        self.n_samples = n_samples
        self._truth = None
        self._state: tuple[int, object] | None = None

    def _day_index(self, day: dt.date) -> int:
        return (day - self.cfg.start_date).days

    def _truth_for(self, d: int):
        from .truth import TruePreferences

        if self._truth is None or self._truth.world.n_days <= d:
            self._truth = TruePreferences.from_config(self.cfg.replace(days=max(self.cfg.days, d + 1)))
        return self._truth

    def _state_for(self, d: int):
        """The users' state at the start of day d, from the workouts (cached per day)."""
        from .behaviour import UserState

        if self._state is not None and self._state[0] == d:
            return self._state[1]
        truth = self._truth_for(d)
        start = dt.datetime.combine(self.cfg.start_date, dt.time(), tzinfo=dt.timezone.utc)
        w = (
            self.workouts()
            .select("user_id", "class_id", "start_ts", "minutes")
            .filter(pl.col("start_ts") < start + dt.timedelta(days=d))
            .unique(subset=["user_id", "class_id", "start_ts"])
            .collect()
        )
        sec = w.select((pl.col("start_ts") - pl.lit(start)).dt.total_seconds())["start_ts"].to_numpy()
        state = UserState.from_workouts(
            truth.world, truth.world.user_codes(w["user_id"].to_numpy()),
            truth.world.class_codes(w["class_id"].to_numpy()), sec, w["minutes"].to_numpy(), d,
        )
        self._state = (d, state)
        return state

    def score(self, batch: ListLike) -> np.ndarray:
        d = self._day_index(batch.day)
        truth = self._truth_for(d)
        state = self._state_for(d)
        users = np.array(batch.users["user_id"].to_list(), dtype=object)
        classes = np.array(batch.classes["class_id"].to_list(), dtype=object)
        out = np.empty((len(users), len(classes)), dtype=np.float32)
        step = 512  # bounded memory: users x samples x classes floats per chunk
        for i in range(0, len(users), step):
            out[i:i + step] = truth.oracle_scores(
                users[i:i + step], batch.platform, d, classes, state=state,
                n_samples=self.n_samples, seed=i,
            )
        return out


def load_oracle(landing_uri: str, workouts: Callable[[], pl.LazyFrame],
                n_samples: int = 16) -> OracleRanker | None:
    """The oracle of the simulator that wrote `landing_uri`, or None when none did."""
    cfg = read_simulator_config(landing_uri)
    return None if cfg is None else OracleRanker(cfg, workouts, n_samples)


__all__ = ["ListLike", "OracleRanker", "load_oracle", "read_simulator_config"]
