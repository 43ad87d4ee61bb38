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
    list_metrics,
    log_loss,
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
