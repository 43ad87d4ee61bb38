"""simulator.oracle: the oracle ranker rebuilds the true preferences and each user's state from
the config and the workouts alone, and scores a list as `TruePreferences.oracle_scores` does."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import polars as pl

from simulator import state_at
from simulator.oracle import OracleRanker, load_oracle, read_simulator_config


def _workouts(landing: str) -> pl.LazyFrame:
    return pl.scan_parquet(f"{landing}/workouts/date=*/*.parquet")


def test_config_is_read_back_and_no_config_means_no_oracle(tiny_cfg, tiny_landing, tmp_path):
    assert read_simulator_config(tiny_landing) == tiny_cfg.to_dict()
    assert read_simulator_config(str(tmp_path)) is None
    assert load_oracle(str(tmp_path), lambda: _workouts(tiny_landing)) is None
    assert isinstance(load_oracle(tiny_landing, lambda: _workouts(tiny_landing)), OracleRanker)


def test_scores_are_the_true_preferences_under_the_state_of_the_day(tiny_cfg, tiny_landing):
    day = 6
    oracle = load_oracle(tiny_landing, lambda: _workouts(tiny_landing))
    truth, state = state_at(tiny_cfg, day)
    users = truth.world.user_ids(np.arange(25))
    classes = truth.world.class_ids(truth.offered(0, day))
    batch = SimpleNamespace(day=tiny_cfg.start_date + dt.timedelta(days=day), platform="bike",
                            users=pl.DataFrame({"user_id": list(users)}),
                            classes=pl.DataFrame({"class_id": list(classes)}))
    got = oracle.score(batch)
    want = truth.oracle_scores(users, "bike", day, classes, state=state, n_samples=16, seed=0)
    assert got.shape == (25, len(classes)) and oracle.name == "oracle"
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # users differ: not one ranking for everyone
    assert len({tuple(np.argsort(-row)[:5]) for row in got}) > 1
