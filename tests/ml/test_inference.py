"""Batch inference on the tiny Delta lakehouse: rows, exclusions, instructor cap, recent-state row."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from ml.features import Encoders, default_spec
from ml.gold_reader import read_examples
from ml.inference import (
    RECOMMENDATION_SCHEMA,
    InferenceError,
    InferenceSettings,
    InferenceStats,
    ModelRef,
    run_inference,
    top_k_capped,
)
from ml.model import ModelConfig, build_model
from tests.ml.test_evaluation import lake  # noqa: F401  (fixture)
from tests.ml.test_gold_reader import E2


def test_top_k_caps_instructors_skips_excluded_and_pads():
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0, -np.inf]])
    groups = np.array([0, 0, 0, 1, 2, 3])
    assert top_k_capped(scores, groups, k=3, cap=2).tolist() == [[0, 1, 3]]
    assert top_k_capped(scores, groups, k=6, cap=1).tolist() == [[0, 3, 4, -1, -1, -1]]
    assert top_k_capped(scores, groups, k=2, cap=5).tolist() == [[0, 1]]


def _model(lake):  # noqa: F811
    enc = Encoders.fit(read_examples(lake).collect(), default_spec())
    torch.manual_seed(0)
    cfg = ModelConfig(sparse_cardinalities=enc.cardinalities(), n_dense=len(enc.spec.dense),
                      embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16], sparse_names=list(enc.spec.sparse))
    return build_model(cfg, "reference").eval(), enc, cfg.heads


def _run(lake, settings, feature_date=E2):  # noqa: F811
    stats = InferenceStats()
    day, frames = run_inference(ModelRef("unused", 7), lake, feature_date, settings, use_ray=False,
                                stats=stats, loaded=_model(lake))
    return day, pl.concat(list(frames)), stats


def test_rows_for_every_active_user_without_recently_taken_classes(lake):  # noqa: F811
    day, rows, stats = _run(lake, InferenceSettings(exclude_days=14, top_k=5, distinct_rows=False))
    assert day.serve_date == E2 + dt.timedelta(days=1)
    assert rows.schema == pl.from_arrow(RECOMMENDATION_SCHEMA.empty_table()).schema
    # 40 users, each on the bike (owned) and nothing else has candidates in this lakehouse
    assert rows["user_id"].n_unique() == 40 == stats.users
    assert set(rows["platform"]) == {"bike"}
    # nobody worked out on E2 in this data: the recent-state row is absent
    assert set(rows["row_id"]) == {"for_you", "morning", "evening"}
    # everyone took c1 on E1/E2: never recommended again; c2 and c3 are left
    assert "c1" not in set(rows["class_id"])
    assert set(rows["class_id"]) == {"c2", "c3"}
    per = rows.group_by("user_id", "row_id").agg(pl.col("rank").sort())
    assert all(r == list(range(1, len(r) + 1)) for r in per["rank"].to_list())
    assert rows["score"].is_between(0, 1).all() and (rows["model_version"] == 7).all()
    assert stats.pairs_scored == 40 * 3 * 3  # users x rows x candidates on E2 (c1, c2, c3)


def test_instructor_cap_and_recover_row(lake, tmp_path):  # noqa: F811
    import shutil

    lake2 = str(tmp_path / "lake")
    shutil.copytree(lake, lake2)
    uf = pl.read_delta(f"{lake2}/gold/user_features_daily")
    worked = uf.with_columns(pl.when((pl.col("feature_date") == E2) & pl.col("user_id").is_in(["u1", "u3"]))
                             .then(0).otherwise(pl.col("days_since_last_workout"))
                             .alias("days_since_last_workout"))
    worked.write_delta(f"{lake2}/gold/user_features_daily", mode="overwrite")
    _, rows, _ = _run(lake2, InferenceSettings(exclude_days=0, top_k=3, max_per_instructor=1,
                                               distinct_rows=False))
    # c1 and c3 share instructor i1: at most one of them per row
    per_row = rows.group_by("user_id", "row_id").agg(pl.col("class_id"))
    assert all(not {"c1", "c3"} <= set(c) for c in per_row["class_id"].to_list())
    recover = rows.filter(pl.col("row_id") == "recover")
    assert set(recover["user_id"]) == {"u1", "u3"}
    assert set(recover["row_title"]) == {"Recover from yesterday's ride"}  # their last class: cycling


def test_rows_of_one_screen_never_repeat_a_class(lake):  # noqa: F811
    _, rows, _ = _run(lake, InferenceSettings(exclude_days=0, top_k=1))
    # three candidates, three rows of one: each row gets the best class the rows above left
    assert rows.group_by("user_id", "platform").agg(pl.col("class_id").n_unique(), pl.len()).filter(
        pl.col("class_id") != pl.col("len")).height == 0
    assert rows.group_by("user_id").len()["len"].min() == 3


def test_no_features_for_the_day_is_a_clear_error(lake):  # noqa: F811
    with pytest.raises(InferenceError, match="no active user for feature_date 2020-01-01"):
        _run(lake, InferenceSettings(), feature_date=dt.date(2020, 1, 1))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="precision"):
        InferenceSettings(precision="int4")
