"""The oracle ranker: the simulator's true preferences, for data a simulator made.

The simulator leaves `<landing>/_simulator/config.json`; from it the true preferences are rebuilt
exactly, and each user's state at the start of a day is rebuilt from the bronze workouts before
that day (what an analyst could compute; it equals the simulated state). The oracle then ranks
the same candidates a model sees, knowing only what a daily batch list knows (see
`simulator.truth.TruePreferences.oracle_scores`). Data without that file has no oracle:
`load_oracle` returns None and the evaluation says so.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pyarrow.fs as pafs

from ml.gold_reader import _scan, table_uri

CONFIG_PATH = "_simulator/config.json"


def read_simulator_config(landing_uri: str, storage_options: dict | None = None) -> dict | None:
    """The simulator's settings from the landing zone, or None when no simulator wrote it."""
    path = f"{landing_uri.rstrip('/')}/{CONFIG_PATH}"
    try:
        if landing_uri.startswith("s3://"):
            from lakehouse.storage import filesystem_for  # S3 settings from the environment

            fs, root = filesystem_for(landing_uri)
            with fs.open_input_stream(f"{root.rstrip('/')}/{CONFIG_PATH}") as f:
                return json.loads(f.read().decode())
        with pafs.LocalFileSystem().open_input_stream(path) as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError):
        return None


class OracleRanker:
    name = "oracle"

    def __init__(self, config: dict, lakehouse_uri: str, storage_options: dict | None = None,
                 n_samples: int = 16) -> None:
        from simulator.config import SimConfig

        self.cfg = SimConfig.from_dict(config)
        self.lakehouse_uri = lakehouse_uri
        self.storage_options = storage_options
        self.n_samples = n_samples
        self._truth = None
        self._state: tuple[int, object] | None = None

    def _day_index(self, day: dt.date) -> int:
        return (day - self.cfg.start_date).days

    def _truth_for(self, d: int):
        from simulator.truth import TruePreferences

        if self._truth is None or self._truth.world.n_days <= d:
            self._truth = TruePreferences.from_config(self.cfg.replace(days=max(self.cfg.days, d + 1)))
        return self._truth

    def _state_for(self, d: int):
        """The users' state at the start of day d, from bronze workouts (cached per day)."""
        from simulator.behaviour import UserState

        if self._state is not None and self._state[0] == d:
            return self._state[1]
        truth = self._truth_for(d)
        start = dt.datetime.combine(self.cfg.start_date, dt.time(), tzinfo=dt.timezone.utc)
        w = (
            _scan(table_uri(self.lakehouse_uri, "bronze", "workouts"), self.storage_options)
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

    def score(self, batch) -> np.ndarray:
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


def load_oracle(landing_uri: str, lakehouse_uri: str, storage_options: dict | None = None,
                n_samples: int = 16) -> OracleRanker | None:
    cfg = read_simulator_config(landing_uri, storage_options)
    return None if cfg is None else OracleRanker(cfg, lakehouse_uri, storage_options, n_samples)


__all__ = ["OracleRanker", "load_oracle", "read_simulator_config"]
