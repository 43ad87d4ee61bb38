"""Ranking metrics, the pair encoder and the evaluation lists on a tiny Delta lakehouse."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from ml.evaluation import (
    EvalSettings,
    ModelRanker,
    PopularityRanker,
    build_lists,
    comparison_table,
    evaluate,
    list_context,
)
from ml.features import Encoders, default_spec
from ml.gold_reader import read_examples
from ml.pairs import PairEncoder
from ml.ranking_metrics import calibration_table, list_metrics, top_k
from tests.ml.test_gold_reader import CLASSES, E1, E2, E3, build_lakehouse


# ---------------------------------------------------------------------------------------------
# metrics


def test_list_metrics_match_hand_computed_values():
    # one list, 5 candidates; relevant: candidates 1 and 3, plus one relevant item that was not
    # a candidate at all (n_relevant = 3)
    scores = np.array([[0.9, 0.8, 0.1, 0.7, 0.0]])
    relevant = np.array([[False, True, False, True, False]])
    top = top_k(scores, 5)
    assert top.tolist() == [[0, 1, 3, 2, 4]]
    m = list_metrics(top, relevant, np.array([3]), ks=(2, 5))
    # hits at ranks 2 and 3: AP@5 = (1/2 + 2/3) / min(3, 5)
    assert m["map@5"][0] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert m["map@2"][0] == pytest.approx((1 / 2) / 2)
    assert m["recall@5"][0] == pytest.approx(2 / 3)
    assert m["hit@2"][0] == 1.0
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert m["ndcg@5"][0] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / ideal)


def test_top_k_never_returns_excluded_and_breaks_ties_by_index():
    scores = np.array([[1.0, 1.0, 1.0, 0.5]])
    excluded = np.array([[True, False, False, False]])
    assert top_k(scores, 3, excluded).tolist() == [[1, 2, 3]]
    # fewer eligible candidates than k: empty slots are -1 and count as misses
    top = top_k(scores, 6, np.array([[True, True, False, False]]))
    assert top.tolist() == [[2, 3, -1, -1, -1, -1]]
    m = list_metrics(top, np.array([[True, False, False, False]]), np.array([1]), ks=(5,))
    assert m["hit@5"][0] == 0.0


def test_metrics_reject_lists_without_relevant_items():
    with pytest.raises(ValueError, match="at least one relevant"):
        list_metrics(np.array([[0]]), np.array([[False]]), np.array([0]), ks=(1,))


def test_calibration_deciles_follow_the_predictions():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20_000)
    y = rng.uniform(0, 1, p.size) < p  # perfectly calibrated
    table = calibration_table(y, p)
    assert len(table) == 10
    for row in table:
        assert abs(row["mean_predicted"] - row["actual_rate"]) < 0.05
    assert table[0]["mean_predicted"] < table[-1]["mean_predicted"]


# ---------------------------------------------------------------------------------------------
# a tiny lakehouse with scoring candidates


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    uri = build_lakehouse(tmp_path_factory.mktemp("eval"))
    rows = []
    for serve in (E1, E2, E3):
        for cid, (_, _, _, rel) in CLASSES.items():
            if rel <= serve - dt.timedelta(days=1):
                rows.append({"feature_date": serve - dt.timedelta(days=1), "serve_date": serve,
                             "platform": "bike", "class_id": cid})
    pl.DataFrame(rows).write_delta(f"{uri}/gold/scoring_candidates",
                                   delta_write_options={"partition_by": ["feature_date"]})
    # user x instructor affinity: users u1..u20 mostly ride with i1, some with i2
    aff = [{"feature_date": f, "user_id": f"u{n}", "instructor_id": inst,
            "workouts_56d": w, "share_56d": w / 10}
           for f in (E1, E2, E3) for n in range(1, 21)
           for inst, w in (("i1", 7 + n % 3), ("i2", 3 - n % 3))]
    pl.DataFrame(aff).write_delta(f"{uri}/gold/user_instructor_affinity",
                                  delta_write_options={"partition_by": ["feature_date"]})
    return uri


def test_pair_encoder_equals_transform_of_the_cross_join(lake):
    frame = read_examples(lake).collect()
    enc = Encoders.fit(frame, default_spec())
    batch = build_lists(lake, E3, EvalSettings(days=[E3], exclude_days=0))[0]
    users = list_context(batch.users, "bike", E3)
    classes = batch.classes.with_columns(pl.lit(E3).alias("event_date"))
    pe = PairEncoder(enc)
    u, c = pe.encode_users(users), pe.encode_classes(classes)
    dense, sparse = pe.pairs(u, np.arange(users.height), c)
    # the reference: the explicit cross join with the affinity joined per (user, instructor),
    # as read_examples joins it for training
    aff = (pl.read_delta(f"{lake}/gold/user_instructor_affinity")
           .filter(pl.col("feature_date") == E3 - dt.timedelta(days=1))
           .select("user_id", "instructor_id",
                   pl.col("share_56d").alias("user_instructor_share"),
                   pl.col("workouts_56d").cast(pl.Float64).alias("user_instructor_workouts")))
    cross = (users.drop("event_date", "instructor_affinity").join(classes, how="cross")
             .join(aff, on=["user_id", "instructor_id"], how="left", maintain_order="left"))
    assert cross["user_instructor_share"].drop_nulls().len() > 0
    ref = enc.transform(cross)
    assert torch.allclose(dense, ref.dense, atol=1e-6)
    assert torch.equal(sparse, ref.sparse)


class _Oracle:
    """Scores each list's relevant candidates first: a ranker that cannot be beaten."""

    name = "perfect"

    def score(self, batch):
        return batch.relevant.astype(float)


def test_evaluate_lists_exclusion_and_popularity(lake):
    # every user takes c1 every day: on E3 the lists' relevant class is c1
    s = EvalSettings(days=[E3], exclude_days=0, ks=(1, 2))
    res = evaluate(lake, [_Oracle(), PopularityRanker()], s)
    assert res.metric("perfect", "map@1") == pytest.approx(1.0)
    # popularity over the days before E3: c1 was taken by everyone
    assert res.metric("popularity", "map@1") == pytest.approx(1.0)
    lists = res.lists.filter(pl.col("ranker") == "perfect")
    assert lists.height == 40 and set(lists["platform"]) == {"bike"}

    # the product never re-recommends a class taken in the last days: c1 is excluded, so no
    # ranker can hit it (it still counts as relevant)
    s2 = EvalSettings(days=[E3], exclude_days=7, ks=(1, 2))
    res2 = evaluate(lake, [_Oracle(), PopularityRanker()], s2)
    assert res2.metric("perfect", "hit@2") == 0.0
    assert "perfect" in comparison_table(res2, reference="popularity")


def test_model_ranker_scores_every_candidate(lake):
    frame = read_examples(lake).collect()
    enc = Encoders.fit(frame, default_spec())
    calls = []

    def score_fn(dense, sparse):
        calls.append(dense.shape[0])
        return torch.stack([dense[:, 0], dense[:, 0], dense[:, 0]], dim=1)

    batch = build_lists(lake, E3, EvalSettings(days=[E3], exclude_days=0))[0]
    scores = ModelRanker("m", score_fn, enc).score(batch)
    # c1, c2 and c3 (released on E2, so a candidate from E3 on)
    assert scores.shape == batch.relevant.shape == (40, 3)
    assert sum(calls) == 40 * 3


def test_no_lists_is_a_clear_error(lake):
    with pytest.raises(ValueError, match="no evaluation lists"):
        evaluate(lake, [PopularityRanker()], EvalSettings(days=[E1 - dt.timedelta(days=30)]))


def test_user_fraction_downsamples_whole_users(lake):
    full = build_lists(lake, E2, EvalSettings(days=[E2]))[0]
    half = build_lists(lake, E2, EvalSettings(days=[E2], user_fraction=0.5, seed=3))[0]
    assert 0 < half.users.height < full.users.height
    assert set(half.users["user_id"]) <= set(full.users["user_id"])


def test_user_without_usual_hour_is_scored_over_several_hours(lake):
    """A list for a user with no usual hour averages the take probability over UNKNOWN_HOURS."""
    from ml.evaluation import UNKNOWN_HOURS

    frame = read_examples(lake).collect()
    enc = Encoders.fit(frame, default_spec())
    seen = []

    def score_fn(dense, sparse):
        seen.append(sparse[:, enc.spec.sparse.index("hour_of_day")].unique().tolist())
        return torch.zeros(dense.shape[0], 3)

    batch = build_lists(lake, E3, EvalSettings(days=[E3], exclude_days=0))[0]
    batch.users = batch.users.with_columns(
        pl.when(pl.col("user_id") == "u3").then(None).otherwise(pl.col("usual_hour_bike"))
        .alias("usual_hour_bike"))
    scores = ModelRanker("m", score_fn, enc).score(batch)
    assert len(seen) == 1 + len(UNKNOWN_HOURS)  # the users with an hour, then u3 once per hour
    assert np.allclose(scores, np.log(0.5))  # log P(take) with logit 0, whatever the hour
