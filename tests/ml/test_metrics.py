"""ml.metrics: every reported figure against its definition or a hand-computed value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.metrics import (
    calibration_table,
    expected_calibration_error,
    finite,
    finite_or_nan,
    format_ratio,
    list_metrics,
    log_loss,
    paired_bootstrap_ratio,
    roc_auc,
    top_k,
)



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


def test_random_ties_are_fair_fixed_by_the_seed_and_never_beat_a_higher_score():
    # candidate 0 is best; 1..6 tie for the remaining two slots; 7 is worst
    scores = np.array([[5.0, 1, 1, 1, 1, 1, 1, 0.0]] * 4)
    seen = set()
    for seed in range(60):
        top = top_k(scores, 3, tie_seed=seed)
        assert (top[:, 0] == 0).all() and (top[:, 1:] >= 1).all() and (top[:, 1:] <= 6).all()
        assert (top == top_k(scores, 3, tie_seed=seed)).all()  # the same seed, the same order
        seen |= set(top[:, 1:].ravel().tolist())
    assert seen == {1, 2, 3, 4, 5, 6}  # every tied candidate reaches the list, not the lowest ids
    # the draw differs between lists of one call (no list repeats another's order every time)
    draws = top_k(np.ones((50, 20)), 5, tie_seed=1)
    assert len({tuple(r) for r in draws.tolist()}) > 40
    # index order without a seed, as before
    assert top_k(scores[:1], 3).tolist() == [[0, 1, 2]]


def test_paired_bootstrap_interval_covers_what_it_should():
    rng = np.random.default_rng(3)
    b = rng.random(400)
    same = paired_bootstrap_ratio(b, b)
    assert same["ratio"] == same["low"] == same["high"] == 1.0  # paired: no spread at all
    # a ranker 1.5x the other on every list, with noise: the interval excludes 1 and holds 1.5
    a = 1.5 * b + rng.normal(0, 0.05, 400)
    up = paired_bootstrap_ratio(a, b, n_boot=1000, seed=1)
    assert 1.0 < up["low"] < a.mean() / b.mean() < up["high"] and up["low"] < 1.5 < up["high"]
    assert up == paired_bootstrap_ratio(a, b, n_boot=1000, seed=1)  # the seed fixes it
    assert format_ratio(up) == f"{up['ratio']:.2f}x [{up['low']:.2f}, {up['high']:.2f}]"
    # a bound that only rounds to 1 says on which side of 1 it is
    assert format_ratio({"ratio": 1.48, "low": 1.0031, "high": 2.25}) == "1.48x [1.003, 2.25]"
    assert format_ratio({"ratio": 1.2, "low": 0.9996, "high": 1.5}) == "1.20x [0.9996, 1.50]"
    assert format_ratio({"ratio": 1.0, "low": 1.0, "high": 1.0}) == "1.00x [1.00, 1.00]"
    # no difference but noise: the interval includes 1
    c = b + rng.normal(0, 0.2, 400)
    flat = paired_bootstrap_ratio(c, b, n_boot=1000)
    assert flat["low"] < 1.0 < flat["high"]


def test_paired_bootstrap_resamples_users_not_lists():
    rng = np.random.default_rng(5)
    a, b = rng.random(60), rng.random(60)
    # each user's list repeated 10 times: 600 lists but still 60 users' worth of evidence
    users = np.repeat(np.arange(60), 10)
    by_user = paired_bootstrap_ratio(np.repeat(a, 10), np.repeat(b, 10), users, n_boot=2000)
    by_list = paired_bootstrap_ratio(np.repeat(a, 10), np.repeat(b, 10), n_boot=2000)
    once = paired_bootstrap_ratio(a, b, n_boot=2000)
    assert by_user["lists"] == 600 and by_user["groups"] == 60
    width = lambda r: r["high"] - r["low"]  # noqa: E731
    assert width(by_user) == pytest.approx(width(once), rel=0.2)
    assert width(by_list) < 0.6 * width(by_user)  # resampling lists would overstate certainty
    # no ratio when the reference is all zeros
    assert math.isnan(paired_bootstrap_ratio(a, np.zeros(60))["ratio"])
    with pytest.raises(ValueError, match="two 1-d arrays of one length"):
        paired_bootstrap_ratio(a, b[:10])


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


def test_roc_auc_matches_definition():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    pairs = [(p, q) for p in s[y == 1] for q in s[y == 0]]
    expected = np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in pairs])
    assert roc_auc(y, s) == pytest.approx(expected)
    assert roc_auc(np.ones(3), np.arange(3)) != roc_auc(np.ones(3), np.arange(3))  # NaN


def test_log_loss_and_ece_by_hand():
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    table = [{"n": 3, "mean_predicted": 0.2, "actual_rate": 0.0},
             {"n": 1, "mean_predicted": 0.5, "actual_rate": 1.0}]
    assert expected_calibration_error(table) == pytest.approx((3 * 0.2 + 1 * 0.5) / 4)
    assert math.isnan(expected_calibration_error([]))


def test_reports_carry_finite_numbers_only():
    assert [finite(v) for v in (1, "2.5", float("nan"), float("inf"), None, "x")] == [
        1.0, 2.5, None, None, None, None]
    out = finite_or_nan({"a": 3, "b": float("-inf"), "c": None})
    assert out["a"] == 3.0 and math.isnan(out["b"]) and math.isnan(out["c"])
