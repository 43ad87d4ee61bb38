"""Batch inference on the tiny Delta lakehouse: rows, exclusions, instructor cap, recent-state row."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter

import numpy as np
import polars as pl
import pytest
import torch

from ml.features import Encoders, default_spec, with_added
from ml.examples import read_examples
from ml.gold import GoldStore
from ml.inference import InferenceStats, ModelRef, run_inference
from ml.row_scorer import top_k_capped
from ml.rows import RECOMMENDATION_SCHEMA, InferenceError, InferenceSettings
from ml.model import ModelConfig, build_model
from ml.serving import score_frame
from tests.ml.tiny_gold import DISC, E2


def test_top_k_caps_instructors_skips_excluded_and_pads():
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0, -np.inf]])
    groups = np.array([0, 0, 0, 1, 2, 3])
    assert top_k_capped(scores, groups, k=3, cap=2).tolist() == [[0, 1, 3]]
    assert top_k_capped(scores, groups, k=6, cap=1).tolist() == [[0, 3, 4, -1, -1, -1]]
    assert top_k_capped(scores, groups, k=2, cap=5).tolist() == [[0, 1]]


def _model(lake):
    enc = Encoders.fit(read_examples(GoldStore(lake)).collect(), default_spec())
    torch.manual_seed(0)
    cfg = ModelConfig(sparse_cardinalities=enc.cardinalities(), n_dense=len(enc.spec.dense),
                      embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16], sparse_names=list(enc.spec.sparse))
    return build_model(cfg, "reference").eval(), enc, cfg.heads


def _run(lake, settings, feature_date=E2, loaded=None):
    stats = InferenceStats()
    day, frames = run_inference(ModelRef("unused", 7), GoldStore(lake), feature_date, settings, use_ray=False,
                                stats=stats, loaded=loaded or _model(lake))
    return day, pl.concat(list(frames)), stats


def test_rows_for_every_active_user_without_recently_taken_classes(candidates_lake):
    day, rows, stats = _run(candidates_lake, InferenceSettings(exclude_days=14, top_k=5, distinct_rows=False))
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


def test_instructor_cap_and_recover_row(candidates_lake, tmp_path):
    lake2 = str(tmp_path / "lake")
    shutil.copytree(candidates_lake, lake2)
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


# ---------------------------------------------------------------------------------------------
# every row is the model under that row's context

# users who worked out on E2 (the recent-state row): their last class
WORKED = {"u1": ("cycling", "lower", 20), "u3": ("yoga", "core", 15), "u7": ("running", "lower", 30),
          "u30": ("strength", "upper", 45)}
NO_USUAL_HOUR = ("u4", "u22")


@pytest.fixture(scope="module")
def varied_lake(candidates_lake, tmp_path_factory) -> str:
    """candidates_lake with, on E2, usual bike hours spread over the day (most often 18h, none for
    NO_USUAL_HOUR) and the users of WORKED active that day after different classes."""
    lake = str(tmp_path_factory.mktemp("varied") / "lake")
    shutil.copytree(candidates_lake, lake)
    uf = pl.read_delta(f"{lake}/gold/user_features_daily")
    n = pl.col("user_id").str.slice(1).cast(pl.Int32)
    on_e2 = pl.col("feature_date") == E2

    def last(i: int, dtype):
        col = {0: "last_discipline", 1: "last_body_focus", 2: "last_duration_min"}[i]
        expr = pl.col(col)
        for u, values in WORKED.items():
            expr = pl.when(on_e2 & (pl.col("user_id") == u)).then(pl.lit(values[i], dtype)).otherwise(expr)
        return expr.alias(col)

    uf = uf.with_columns(
        pl.when(on_e2 & pl.col("user_id").is_in(NO_USUAL_HOUR)).then(None)
        .when(on_e2 & (n % 3 == 0)).then(18.0)
        .when(on_e2).then(5 + (7 * n) % 17 + pl.when(n % 2 == 0).then(0.4).otherwise(-0.3))
        .otherwise(pl.col("usual_hour_bike")).alias("usual_hour_bike"),
        pl.when(on_e2 & pl.col("user_id").is_in(list(WORKED))).then(0)
        .otherwise(pl.col("days_since_last_workout")).alias("days_since_last_workout"),
        last(0, uf.schema["last_discipline"]), last(1, uf.schema["last_body_focus"]),
        last(2, uf.schema["last_duration_min"]))
    uf.write_delta(f"{lake}/gold/user_features_daily", mode="overwrite")
    return lake


def _context_model(lake: str, seed: int = 0, spec=None):
    """(model, encoders, heads): encoders fitted with every hour and previous-class context seen in
    training (the lakehouse's examples are all at 7h, first in their session), and a model whose
    weights are far from zero, so every context column moves the scores."""
    frame = read_examples(GoldStore(lake)).collect()
    n = frame.height
    frame = frame.with_columns(
        hour_of_day=pl.Series([k % 24 for k in range(n)]).cast(frame.schema["hour_of_day"]),
        prev_discipline=pl.Series([DISC[k % len(DISC)] if k % 3 else None for k in range(n)], dtype=pl.Utf8),
        prev_body_focus=pl.Series([("lower", "upper", "core")[k % 3] if k % 3 else None for k in range(n)],
                                  dtype=pl.Utf8),
        prev_duration_min=pl.Series([(10, 15, 20, 30, 45)[k % 5] if k % 3 else None for k in range(n)]
                                    ).cast(frame.schema["prev_duration_min"]),
        minutes_since_prev=pl.Series([float(k % 40) if k % 3 else None for k in range(n)]
                                     ).cast(frame.schema["minutes_since_prev"]),
        position_in_session=pl.Series([2 if k % 3 else 1 for k in range(n)]
                                      ).cast(frame.schema["position_in_session"]))
    enc = Encoders.fit(frame, spec or default_spec())
    torch.manual_seed(seed)
    cfg = ModelConfig(sparse_cardinalities=enc.cardinalities(), n_dense=len(enc.spec.dense),
                      embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16], sparse_names=list(enc.spec.sparse))
    model = build_model(cfg, "reference").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model, enc, cfg.heads


def _by_hand(lake: str, classes: pl.DataFrame, serve: dt.date, row_id: str) -> pl.DataFrame:
    """users x classes a row scores on the bike, user-major, its context written out by hand from
    the gold rows: "for_you" at the user's usual hour (rounded; else the most common one), "morning"
    at 7h, "evening" at 20h, "recover" (users who worked out on the feature date) at the usual hour
    as the class 5 minutes after that workout (prev_* = last_*, second in the session)."""
    fdate = serve - dt.timedelta(days=1)
    users = (pl.read_delta(f"{lake}/gold/user_features_daily")
             .filter((pl.col("feature_date") == fdate) & (pl.col("workouts_28d") > 0)).sort("user_id"))
    usual = [None if h is None else int(np.floor(h + 0.5)) for h in users["usual_hour_bike"].to_list()]
    (most_common, _), = Counter(h for h in usual if h is not None).most_common(1)
    hours = [7 if row_id == "morning" else 20 if row_id == "evening" else most_common if h is None else h
             for h in usual]
    users = users.with_columns(hour_of_day=pl.Series(hours, dtype=pl.Int32))
    if row_id == "recover":
        users = users.filter(pl.col("days_since_last_workout") == 0).with_columns(
            prev_discipline=pl.col("last_discipline"), prev_body_focus=pl.col("last_body_focus"),
            prev_duration_min=pl.col("last_duration_min").cast(pl.Int32),
            minutes_since_prev=pl.lit(5.0), position_in_session=pl.lit(2, pl.Int32))
    else:
        users = users.with_columns(
            prev_discipline=pl.lit(None, pl.Utf8), prev_body_focus=pl.lit(None, pl.Utf8),
            prev_duration_min=pl.lit(None, pl.Int32), minutes_since_prev=pl.lit(None, pl.Float64),
            position_in_session=pl.lit(1, pl.Int32))
    users = users.drop("feature_date").with_columns(
        platform=pl.lit("bike"), day_of_week=pl.lit(serve.isoweekday(), pl.Int32),
        is_weekend=pl.lit(serve.isoweekday() >= 6))
    aff = (pl.read_delta(f"{lake}/gold/user_instructor_affinity").filter(pl.col("feature_date") == fdate)
           .select("user_id", "instructor_id", pl.col("share_56d").alias("user_instructor_share"),
                   pl.col("workouts_56d").cast(pl.Float64).alias("user_instructor_workouts")))
    return (users.join(classes.with_columns(event_date=pl.lit(serve)), how="cross")
            .join(aff, on=["user_id", "instructor_id"], how="left", maintain_order="left"))


def test_every_row_is_the_model_under_its_context(varied_lake):
    model, enc, heads = _context_model(varied_lake)
    settings = InferenceSettings(exclude_days=0, top_k=3, max_per_instructor=3, distinct_rows=False,
                                 precision="fp32")
    day, rows, _ = _run(varied_lake, settings, loaded=(model, enc, heads))
    classes = day.candidates["bike"]
    assert classes["class_id"].to_list() == ["c1", "c2", "c3"]
    assert set(rows["row_id"]) == {"for_you", "morning", "evening", "recover"}
    probs = {}
    for row_id in ("for_you", "morning", "evening", "recover"):
        frame = _by_hand(varied_lake, classes, day.serve_date, row_id)
        users = frame["user_id"].unique(maintain_order=True).to_list()
        assert len(users) == (len(WORKED) if row_id == "recover" else 40)
        want = score_frame(model, enc, frame)[:, 0].reshape(len(users), 3)
        got = (rows.filter(pl.col("row_id") == row_id)
               .pivot(on="class_id", index="user_id", values="score").sort("user_id"))
        assert got["user_id"].to_list() == users, row_id
        np.testing.assert_allclose(got.select("c1", "c2", "c3").to_numpy(), want, rtol=1e-4, atol=1e-6,
                                   err_msg=f"row {row_id!r}: scores are not the model's under its context")
        # ranked by that score
        ranked = (rows.filter(pl.col("row_id") == row_id).sort("user_id", "rank")
                  .group_by("user_id", maintain_order=True).agg("class_id"))
        assert ranked["class_id"].to_list() == [[("c1", "c2", "c3")[j] for j in np.argsort(-w, kind="stable")]
                                                for w in want], row_id
        hours = frame.group_by("user_id", maintain_order=True).agg(pl.col("hour_of_day").first())
        probs[row_id] = {u: (h, p) for u, h, p in zip(users, hours["hour_of_day"], want)}
    # where the contexts differ, so do the scores (recover vs for you: the same hour, not the same
    # session context)
    for a, b in (("for_you", "morning"), ("morning", "evening"), ("for_you", "recover")):
        differ = [u for u in set(probs[a]) & set(probs[b]) if b == "recover" or probs[a][u][0] != probs[b][u][0]]
        assert len(differ) >= len(WORKED)
        assert all(np.abs(probs[a][u][1] - probs[b][u][1]).max() > 1e-3 for u in differ), (a, b)
    recover = rows.filter(pl.col("row_id") == "recover").group_by("user_id").agg(pl.col("row_title").first())
    assert dict(recover.iter_rows()) == {
        "u1": "Recover from yesterday's ride", "u3": "Recover from yesterday's yoga",
        "u7": "Recover from yesterday's run", "u30": "Recover from yesterday's strength class"}


def test_a_user_column_added_by_dbt_is_trained_on_and_served(candidates_lake, tmp_path):
    # `add_features`: a numeric column a dbt model added to user_features_daily (or the shared
    # user embeddings joined there) reaches the examples, and the daily rows score it as the
    # model reads it
    lake = str(tmp_path / "lake")
    shutil.copytree(candidates_lake, lake)
    uf = pl.read_delta(f"{lake}/gold/user_features_daily")
    score = (pl.col("user_id").str.slice(1).cast(pl.Float32) * 0.1).alias("user_emb_00")
    uf.with_columns(score).write_delta(f"{lake}/gold/user_features_daily", mode="overwrite",
                                       delta_write_options={"schema_mode": "overwrite"})
    examples = read_examples(GoldStore(lake)).collect()
    assert examples["user_emb_00"].drop_nulls().n_unique() > 10
    spec = with_added(default_spec(), ["user_emb_*"], examples.schema)
    model, enc, heads = _context_model(lake, spec=spec)
    settings = InferenceSettings(exclude_days=0, top_k=3, max_per_instructor=3, distinct_rows=False,
                                 precision="fp32")
    day, rows, _ = _run(lake, settings, loaded=(model, enc, heads))
    frame = _by_hand(lake, day.candidates["bike"], day.serve_date, "for_you")
    want = score_frame(model, enc, frame)[:, 0].reshape(40, 3)
    got = (rows.filter(pl.col("row_id") == "for_you")
           .pivot(on="class_id", index="user_id", values="score").sort("user_id"))
    np.testing.assert_allclose(got.select("c1", "c2", "c3").to_numpy(), want, rtol=1e-4, atol=1e-6)
    # the column moves the scores: the same users with it zeroed score otherwise
    flat = score_frame(model, enc, frame.with_columns(pl.lit(0.0, pl.Float32).alias("user_emb_00")))
    assert np.abs(flat[:, 0].reshape(40, 3) - want).max() > 1e-3


def test_rows_of_one_screen_never_repeat_a_class(candidates_lake):
    _, rows, _ = _run(candidates_lake, InferenceSettings(exclude_days=0, top_k=1))
    # three candidates, three rows of one: each row gets the best class the rows above left
    assert rows.group_by("user_id", "platform").agg(pl.col("class_id").n_unique(), pl.len()).filter(
        pl.col("class_id") != pl.col("len")).height == 0
    assert rows.group_by("user_id").len()["len"].min() == 3


def test_no_features_for_the_day_is_a_clear_error(candidates_lake):
    with pytest.raises(InferenceError, match="no active user for feature_date 2020-01-01"):
        _run(candidates_lake, InferenceSettings(), feature_date=dt.date(2020, 1, 1))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="precision"):
        InferenceSettings(precision="int4")


@pytest.mark.parametrize("cap", [1, 10])
def test_ranking_retrieved_classes_that_cover_the_catalogue_gives_the_exhaustive_rows(candidates_lake, cap):
    """Retrieve then rank scores each user's own columns: with every class retrieved (in
    another order, some twice) the rows are the exhaustive ones, a repeat never shown twice."""
    from types import SimpleNamespace

    from ml.inference import iter_user_batches, load_day, user_state
    from ml.row_scorer import BatchScorer

    settings = InferenceSettings(exclude_days=0, top_k=3, max_per_instructor=cap, users_per_batch=10**6,
                                 precision="fp32")  # bf16 rounds the two paths differently
    module, enc, heads = _model(candidates_lake)
    gold = GoldStore(candidates_lake)
    day = load_day(gold, E2, settings)
    users, taken = user_state(gold, E2, next(iter_user_batches(gold, E2, settings)), settings)
    C = day.candidates["bike"].height
    retriever = SimpleNamespace(candidates=lambda frame, platform: np.tile(
        np.r_[np.arange(C)[::-1], np.arange(C)], (frame.height, 1)))

    def rows(r):
        return (BatchScorer(module, enc, heads, day, settings, 7, r).score(users, taken)
                .drop("generated_at").sort("user_id", "platform", "row_rank", "rank"))

    exhaustive, retrieved = rows(None), rows(retriever)
    assert exhaustive.height > 0
    assert retrieved.select(pl.exclude("score")).equals(exhaustive.select(pl.exclude("score")))
    np.testing.assert_allclose(retrieved["score"].to_numpy(), exhaustive["score"].to_numpy(), rtol=1e-5)
    assert retrieved.group_by("user_id", "platform", "row_id").agg(pl.col("class_id").is_unique().all())[
        "class_id"].all()


@pytest.mark.parametrize("per_batch", [1, 7, 10**6])
def test_the_days_takes_read_once_give_each_batch_its_own(candidates_lake, per_batch):
    """`UserState` reads the exclusion window's takes once and slices them per batch (by the
    batch's first and last user): each batch gets exactly what reading it alone gives."""
    from ml.inference import UserState, iter_user_batches, user_state

    settings = InferenceSettings(exclude_days=14, users_per_batch=per_batch)
    gold = GoldStore(candidates_lake)
    state = UserState(gold, E2, settings)
    seen = 0
    for users in iter_user_batches(gold, E2, settings):
        users_a, taken_a = state.of(users)
        users_b, taken_b = user_state(gold, E2, users, settings)
        assert users_a.equals(users_b)
        assert taken_a.sort("user_id", "class_id").equals(taken_b.sort("user_id", "class_id"))
        assert set(taken_a["user_id"]) <= set(users["user_id"])
        seen += taken_a.height
    assert seen == state.taken.filter(pl.col("user_id").is_in(
        pl.concat(list(iter_user_batches(gold, E2, settings)))["user_id"].to_list())).height > 0



@pytest.mark.parametrize("dataset", ["fitness", "mapped"])
def test_each_users_affinities_come_strongest_first(dataset):
    """Retrieval reads a user's first affinity rows as their strongest: the column holds them by
    the dataset's weight, descending (ties by key, no weight last), whatever the table's order."""
    from types import SimpleNamespace

    from ml.datasets import FITNESS, MAPPED
    from ml.features import AFFINITY_COLUMN

    ds = FITNESS if dataset == "fitness" else MAPPED
    weight, key = ("share_56d", "instructor_id") if dataset == "fitness" else ("share", "value")
    table = pl.DataFrame({"feature_date": [E2] * 6 + [E2 - dt.timedelta(days=1)], "user_id": ["u1"] * 4 + ["u2"] * 2 + ["u1"],
                          key: ["a", "b", "c", "d", "a", "b", "z"],
                          weight: [0.1, 0.5, None, 0.5, 0.2, 0.8, 0.9],
                          "workouts_56d": [1] * 7, "attribute": ["item_attr_genre"] * 7})
    gold = SimpleNamespace(affinity=lambda name: table.lazy())
    got = ds.with_affinity(gold, E2, pl.DataFrame({"user_id": ["u1", "u2", "u3"]}))
    order = {u: [r["key"] for r in rows] if rows else None for u, rows in got.select("user_id", AFFINITY_COLUMN).iter_rows()}
    assert order == {"u1": ["b", "d", "a", "c"], "u2": ["b", "a"], "u3": None}
