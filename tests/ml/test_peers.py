"""ml.peers: EASE and item-kNN against their definitions, peers scoring only what a daily list
knows, tuning on the validation window only, and skipped peers said so."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from ml.datasets import MAPPED
from ml.gold import GoldStore
from ml.lists import EvalSettings, build_lists
from ml.peers import UNSEEN, PeerRanker, PeerSpec, Takes, fit_ease, fit_item_knn, fit_peers
from ml.workflow import evaluate_models
from tests.ml.tiny_mapped_gold import DAYS, build_mapped_lakehouse

EVAL_DAY = DAYS[5]
TRAIN = (DAYS[0], DAYS[4])


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_mapped_lakehouse(tmp_path_factory.mktemp("peers"), "rich")


def _takes(x: np.ndarray) -> Takes:
    m = sp.csr_matrix(x.astype(np.float32))
    return Takes({f"u{i}": i for i in range(x.shape[0])}, {f"i{j}": j for j in range(x.shape[1])}, m)


def test_ease_solves_its_objective():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 8)) < 0.3).astype(np.float64)
    l2 = 5.0
    score = fit_ease(_takes(x), l2)
    b = score(sp.identity(8, format="csr", dtype=np.float32))  # row i of B
    # min ||X - XB||^2 + l2 ||B||^2 s.t. diag(B) = 0: the gradient vanishes off the diagonal
    g = x.T @ x
    grad = (g + l2 * np.eye(8)) @ b - g
    off = ~np.eye(8, dtype=bool)
    assert np.abs(np.diag(b)).max() == 0.0
    assert np.abs(grad[off]).max() < 1e-4


def test_item_knn_is_cosine_with_the_nearest_neighbours_kept():
    x = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1.0]])
    s_all = fit_item_knn(_takes(x), 0)(sp.identity(4, format="csr", dtype=np.float32))
    for i in range(4):
        for j in range(4):
            want = 0.0 if i == j else x[:, i] @ x[:, j] / np.linalg.norm(x[:, i]) / np.linalg.norm(x[:, j])
            assert s_all[i, j] == pytest.approx(want, abs=1e-6)
    s1 = fit_item_knn(_takes(x), 1)(sp.identity(4, format="csr", dtype=np.float32))
    # each item's column keeps its one most similar item
    assert ((s1 > 0).sum(0) == 1).all()
    assert (s1.argmax(0) == s_all.argmax(0)).all()


def test_a_peer_scores_from_the_takes_before_the_day_only(lake):
    uri, log = lake
    gold = GoldStore(uri)
    fitted = Takes.of(gold.takes(*TRAIN).collect())
    score = fit_item_knn(fitted, 0)
    ranker = PeerRanker("item_knn", gold, fitted, score, DAYS[0])
    no_history = 0
    for batch in build_lists(gold, EVAL_DAY, EvalSettings(days=[EVAL_DAY], dataset=MAPPED)):
        got = ranker.score(batch)
        items = batch.classes["class_id"].to_list()
        for i, u in enumerate(batch.users["user_id"].to_list()):
            hist = {t["item"] for t in log.user_takes(u, EVAL_DAY - dt.timedelta(days=1))}
            x = np.zeros((1, len(fitted.items)), np.float32)
            for item in hist & set(fitted.items):
                x[0, fitted.items[item]] = 1.0
            if not hist & set(fitted.items):  # nothing to score from: the list by popularity
                assert (got[i] == batch.popularity).all(), u
                no_history += 1
                continue
            want = score(sp.csr_matrix(x))[0]
            for j, item in enumerate(items):
                if item in fitted.items:
                    assert got[i, j] == pytest.approx(want[fitted.items[item]], abs=1e-5), (u, item)
                else:  # released after the window: below every fitted item
                    assert got[i, j] == UNSEEN
    assert no_history  # the tiny log has users without earlier takes


def test_peers_are_tuned_on_the_end_of_the_training_window_and_evaluated_with_intervals(lake, tmp_path):
    uri, _ = lake
    gold = GoldStore(uri)
    settings = EvalSettings(days=[EVAL_DAY], dataset=MAPPED, exclude_days=3)
    calls = []

    def ease_watched(takes, l2):
        calls.append((l2, takes.matrix.nnz))
        return fit_ease(takes, l2)

    specs = (PeerSpec("ease", ease_watched, (1.0, 100.0)), PeerSpec("item_knn", fit_item_knn, (0,)),
             PeerSpec("als", fit_ease, (1.0,), needs="no_such_module_here"))
    peers = fit_peers(gold, TRAIN, settings, validation_days=1, peers=specs)
    assert peers.skipped == {"als": "`no_such_module_here` is not installed"}
    assert peers.chosen["ease"]["validation_days"] == f"{DAYS[4]}..{DAYS[4]}"
    assert set(peers.chosen["ease"]["validation_map@10"]) == {1.0, 100.0}
    # two fits on the days before the validation day, the winner refitted on the whole window
    before = gold.takes(DAYS[0], DAYS[3]).select("user_id", "class_id").unique().collect().height
    whole = gold.takes(*TRAIN).select("user_id", "class_id").unique().collect().height
    assert [n for _, n in calls] == [before, before, whole]
    assert calls[-1][0] == peers.chosen["ease"]["setting"]

    ev = evaluate_models(gold, {}, settings, out_dir=tmp_path, train_window=TRAIN, peers=peers,
                         candidate="ease")
    assert {"ease", "item_knn", "popularity"} <= set(ev.result.summary["ranker"])
    assert set(ev.comparisons) == {"item_knn", "popularity"}
    assert "| als | skipped: `no_such_module_here` is not installed |" in ev.markdown
    assert "Peer ease: setting" in ev.markdown


def test_a_window_without_takes_skips_every_peer_with_the_reason(lake):
    uri, _ = lake
    early = (DAYS[0] - dt.timedelta(days=30), DAYS[0] - dt.timedelta(days=20))
    peers = fit_peers(GoldStore(uri), early, EvalSettings(days=[EVAL_DAY], dataset=MAPPED))
    assert not peers.rankers
    assert set(peers.skipped.values()) == {"no takes in the training window"}


def test_als_fits_where_implicit_is_installed(lake):
    pytest.importorskip("implicit")
    from ml.peers import fit_als

    uri, _ = lake
    fitted = Takes.of(GoldStore(uri).takes(*TRAIN).collect())
    score = fit_als(fitted, 0.1, factors=4, iterations=5)
    out = score(fitted.matrix[:3])
    assert out.shape == (3, len(fitted.items)) and np.isfinite(out).all()
    # what a user took scores above what they did not, on average (ALS reconstructs X)
    x = fitted.matrix[:3].toarray() > 0
    assert out[x].mean() > out[~x].mean()
    assert pl.Series(out.ravel()).n_unique() > 1
