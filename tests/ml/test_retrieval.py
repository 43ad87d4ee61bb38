"""Retrieval: the two-tower model, the candidate index (faiss) and scoring each user's own
candidates; the retrieve-then-rank path through the Dagster assets is in
tests/test_serving_end_to_end.py."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from ml.examples import read_examples
from ml.factorized import FactorizedDLRM, factorized_score_matrix
from ml.features import Encoders, default_spec
from ml.gold import GoldStore
from ml.model import ModelConfig, build_model
from ml.retrieval import (
    CandidateIndex,
    IndexLoadError,
    PlatformIndex,
    Retriever,
    _make_index,
    load_index,
    save_index,
)
from ml.rows import DayInputs
from ml.two_tower import TowerEncoder
from tests.ml.test_factorized import _setup


def test_scoring_each_users_own_candidates_equals_the_full_matrix(candidates_lake):
    model, cfg, enc, pe, users, classes = _setup(candidates_lake)
    fast = FactorizedDLRM(model.state_dict(), enc.spec, cfg.heads, head="take")
    full = factorized_score_matrix(fast, pe, users, classes)
    n, C = full.shape
    idx = np.random.default_rng(0).integers(0, C, size=(n, 2))
    for max_pairs in (3, 1_000_000):  # chunked and not
        got = factorized_score_matrix(fast, pe, users, classes, idx=idx, max_pairs=max_pairs)
        np.testing.assert_allclose(got, np.take_along_axis(full, idx, axis=1), atol=1e-5, rtol=1e-5)


def test_each_pair_feature_of_own_candidates_equals_the_full_matrix(candidates_lake):
    """The pair features are computed for the retrieved classes only, kind by kind."""
    _, _, _, pe, users, classes = _setup(candidates_lake)
    kinds = {pe.pair_specs[name][0] for _, name in pe.pair_cols}
    assert kinds >= {"share", "lookup", "cooc"}, kinds
    n, C = users.dense.shape[0], classes.dense.shape[0]
    ui = np.arange(n)
    idx = np.random.default_rng(1).integers(0, C, size=(n, 5))
    for _, name in pe.pair_cols:
        full = pe.pair_dense(name, users, ui, classes)
        np.testing.assert_allclose(pe.pair_dense(name, users, ui, classes, idx),
                                   np.take_along_axis(full, idx, axis=1), err_msg=name)


def _two_tower(candidates_lake):
    frame = read_examples(GoldStore(candidates_lake)).collect()
    enc = Encoders.fit(frame, default_spec())
    cfg = ModelConfig(sparse_cardinalities=enc.cardinalities(), n_dense=len(enc.spec.dense),
                      embedding_dim=8, bottom_mlp=[8], sparse_names=list(enc.spec.sparse),
                      sparse_slots=enc.spec.slots(), architecture="two_tower", tower=[16, 8],
                      temperature=0.1, dense_names=list(enc.spec.dense), heads=("take",))
    batch = enc.transform(frame)
    return enc, cfg, batch


def test_two_tower_learns_in_batch_and_scores_pairs_as_its_towers(candidates_lake):
    enc, cfg, batch = _two_tower(candidates_lake)
    torch.manual_seed(0)
    model = build_model(cfg, "reference")
    pos = batch.labels[:, 0] > 0.5
    assert int(pos.sum()) >= 2
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    losses = []
    for _ in range(30):
        logits = model(batch.dense, batch.sparse)
        assert logits.shape == (len(batch), len(batch))  # in-batch scores
        loss, per_head = model.batch_loss(logits, batch.labels, [1.0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses  # it learns to tell the taken classes apart
    model.eval()
    with torch.no_grad():
        scores = model(batch.dense, batch.sparse)
    assert scores.shape == (len(batch), 1)
    # the towers alone (what the index and retrieval use) give the same scores
    tower = TowerEncoder(model.state_dict(), cfg)
    u, c = tower.users(batch.dense, batch.sparse), tower.classes(batch.dense, batch.sparse)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose((u * c).sum(1) / cfg.temperature, scores[:, 0].numpy(), atol=1e-4)
    # fewer than two taken rows: nothing to contrast, a zero loss that still back-propagates
    one = torch.zeros_like(batch.labels)
    one[0, 0] = 1.0
    model.train()
    zero, _ = model.batch_loss(model(batch.dense, batch.sparse), one, [1.0])
    zero.backward()
    assert float(zero) == 0.0


def test_a_class_taken_several_times_in_a_batch_is_one_negative(candidates_lake):
    """Rows [a, a, a, b, c]: every row's softmax reads each other class once (b's row reads a
    once, not three times) and its own row, never a copy of its own class."""
    _, cfg, batch = _two_tower(candidates_lake)
    torch.manual_seed(0)
    model = build_model(cfg, "reference")
    with torch.no_grad():
        _, c = model.towers(batch.dense, batch.sparse)
    rows = [0]  # three rows of distinct classes
    for i in range(1, len(batch)):
        if all(float(c[i] @ c[j]) < 1.0 - 1e-4 for j in rows):
            rows.append(i)
        if len(rows) == 3:
            break
    assert len(rows) == 3
    pick = torch.tensor([rows[0], rows[0], rows[0], rows[1], rows[2]])
    dense, sparse = batch.dense[pick], batch.sparse[pick]
    model.train()
    with torch.no_grad():
        logits = model(dense, sparse)
        loss, _ = model.batch_loss(logits, torch.ones(5, 1), [1.0])
    reads = [[0, 3, 4], [1, 3, 4], [2, 3, 4], [3, 0, 4], [4, 0, 3]]  # the row's own column first
    expected = torch.stack([torch.logsumexp(logits[i, cols], 0) - logits[i, i]
                            for i, cols in enumerate(reads)]).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def _index(tmp_path, exact_max=1_000, n=300, d=8):
    rng = np.random.default_rng(1)
    vec = rng.normal(size=(n, d)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    index, kind = _make_index(vec, exact_max, hnsw_m=16, ef_search=128)
    ci = CandidateIndex(dt.date(2026, 9, 3), 4, 7, d,
                        {"bike": PlatformIndex(np.array([f"c{i:03d}" for i in range(n)], dtype=object), index, kind)})
    return ci, vec


@pytest.mark.parametrize("exact_max", [1_000, 10])
def test_the_index_finds_the_nearest_classes_and_survives_a_round_trip(tmp_path, exact_max):
    ci, vec = _index(tmp_path, exact_max)
    assert ci.platforms["bike"].kind == ("flat" if exact_max >= 300 else "hnsw")
    q = vec[:20] + 0.01
    exact = np.argsort(-(q @ vec.T), axis=1)[:, :10]
    got = ci.search("bike", q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
    assert recall >= (1.0 if exact_max >= 300 else 0.9), recall
    files = save_index(ci, str(tmp_path / "2026-09-03"))
    assert [f.rsplit("/", 1)[1] for f in files] == ["bike.faiss", "manifest.json"]
    back = load_index(str(tmp_path / "2026-09-03"))
    assert (back.feature_date, back.retrieval_version, back.ranker_version) == (dt.date(2026, 9, 3), 4, 7)
    np.testing.assert_array_equal(back.search("bike", q, 10), got)
    assert list(back.platforms["bike"].class_ids[:2]) == ["c000", "c001"]


def test_a_bad_index_is_refused_naming_the_file(tmp_path):
    ci, _ = _index(tmp_path)
    folder = tmp_path / "2026-09-03"
    save_index(ci, str(folder))
    (folder / "bike.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexLoadError, match=r"bike\.faiss is corrupt"):
        load_index(str(folder))
    (folder / "manifest.json").unlink()
    with pytest.raises(IndexLoadError, match=r"manifest\.json cannot be read"):
        load_index(str(folder))
    with pytest.raises(IndexLoadError, match="built by retrieval model version 4 for ranker version 7"):
        ci.check_versions(4, 8)
    ci.check_versions(4, 7)


def test_every_user_gets_the_popular_and_new_classes(tmp_path):
    ci, vec = _index(tmp_path, n=30)
    ids = ci.platforms["bike"].class_ids
    # the day's candidates in another order than the index (and one class the index lacks)
    cand = pl.DataFrame({"class_id": [*reversed(ids.tolist()), "c999"],
                         "release_date": [dt.date(2026, 8, 1)] * 30 + [dt.date(2026, 9, 3)]})
    popular = pl.DataFrame({"platform": ["bike", "bike"], "rank": [1, 2], "class_id": ["c005", "c006"]})
    day = DayInputs(feature_date=dt.date(2026, 9, 3), serve_date=dt.date(2026, 9, 4),
                    candidates={"bike": cand}, popular=popular, default_hour={"bike": 18}, n_users=2)
    queries = vec[[0, 1]]
    tower = SimpleNamespace(users=lambda dense, sparse: queries)
    pairs = SimpleNamespace(encode_users=lambda frame, pairs=True: SimpleNamespace(dense=None, sparse=None))
    r = Retriever(tower, pairs, ci, day, n=3, popular=2, new_days=1)
    got = r.candidates(pl.DataFrame({"user_id": ["u1", "u2"]}), "bike")
    names = cand["class_id"].to_numpy()
    for row, q in zip(got, queries):
        nearest = {f"c{i:03d}" for i in np.argsort(-(vec @ q))[:3]}
        assert set(names[row[:3]]) == nearest
        assert set(names[row[3:]]) == {"c005", "c006", "c999"}  # popular + released on D
    with pytest.raises(ValueError, match="retrieve must be >= 1"):
        Retriever(tower, pairs, ci, day, n=0)


@pytest.mark.parametrize("new_max", [None, 3, 0])
def test_new_classes_per_list_are_capped_to_the_towers_best(tmp_path, new_max):
    """Ten classes released on the day: all of them in every list, or each user's best
    `new_max` by the tower; a new class the index lacks stays in every list."""
    ci, vec = _index(tmp_path, n=30)
    ids = ci.platforms["bike"].class_ids.tolist()
    released = {f"c{i:03d}" for i in range(10)}
    cand = pl.DataFrame({"class_id": [*ids, "c999"],
                         "release_date": [dt.date(2026, 9, 3) if c in released else dt.date(2026, 8, 1)
                                          for c in ids] + [dt.date(2026, 9, 3)]})
    popular = pl.DataFrame({"platform": ["bike"] * 2, "rank": [1, 2], "class_id": ["c020", "c001"]})
    day = DayInputs(feature_date=dt.date(2026, 9, 3), serve_date=dt.date(2026, 9, 4),
                    candidates={"bike": cand}, popular=popular, default_hour={"bike": 18}, n_users=3)
    queries = vec[[12, 13, 14]]
    tower = SimpleNamespace(users=lambda dense, sparse: queries)
    pairs = SimpleNamespace(encode_users=lambda frame, pairs=True: SimpleNamespace(dense=None, sparse=None))
    r = Retriever(tower, pairs, ci, day, n=3, popular=2, new_days=1, new_max=new_max)
    got = r.candidates(pl.DataFrame({"user_id": ["u1", "u2", "u3"]}), "bike")
    names = cand["class_id"].to_numpy()
    rankable = sorted(released - {"c001"})  # c001 is popular: in every list already
    for row, q in zip(got, queries):
        shared = set(names[row[3:]])
        assert {"c020", "c001", "c999"} <= shared
        new = shared - {"c020", "c001", "c999"}
        if new_max is None:
            assert new == set(rankable)
        else:
            best = sorted(rankable, key=lambda c: -float(vec[int(c[1:])] @ q))[:new_max]
            assert new == set(best)
    assert got.shape[1] == 3 + 3 + (len(rankable) if new_max is None else new_max)
    with pytest.raises(ValueError, match="retrieve_new_max must be >= 0"):
        Retriever(tower, pairs, ci, day, n=3, new_max=-1)


def test_a_users_recent_items_bring_their_nearest_neighbours(tmp_path):
    """With `similar=k`, each list also ranks the k classes most similar to each of the user's
    recent items by the ranker's co-occurrence neighbours, among the platform's candidates; a
    user without a recent item, or with one that has no neighbours, gets none of them."""
    from ml.cooccurrence import Neighbours

    ci, vec = _index(tmp_path, n=30)
    ids = ci.platforms["bike"].class_ids.tolist()
    cand = pl.DataFrame({"class_id": ids, "release_date": [dt.date(2026, 8, 1)] * 30})
    popular = pl.DataFrame({"platform": ["bike"], "rank": [1], "class_id": ["c020"]})
    day = DayInputs(feature_date=dt.date(2026, 9, 3), serve_date=dt.date(2026, 9, 4),
                    candidates={"bike": cand}, popular=popular, default_hour={"bike": 18}, n_users=4)
    # c000's neighbours by similarity: c007 (0.9), "gone" (not a candidate today), c003, c009
    nb = Neighbours(items=["c000", "c003", "c007", "c009", "gone"],
                    rows={"c000": ([3, 2, 4, 1], [0.5, 0.9, 0.8, 0.6]), "c003": ([0], [0.4])})
    queries = vec[[12, 13, 14, 15]]
    tower = SimpleNamespace(users=lambda dense, sparse: queries)
    pairs = SimpleNamespace(encode_users=lambda frame, pairs=True: SimpleNamespace(dense=None, sparse=None))
    users = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "last_class_id": ["c000", "c003", None, "c011"]})
    plain = Retriever(tower, pairs, ci, day, n=3, popular=1, new_days=1, new_max=None)
    r = Retriever(tower, pairs, ci, day, n=3, popular=1, new_days=1, new_max=None, similar=2,
                  neighbours=nb, recent_items=["last_class_id"])
    base, got = plain.candidates(users, "bike"), r.candidates(users, "bike")
    np.testing.assert_array_equal(got[:, :base.shape[1]], base)
    names = np.array(ids, dtype=object)
    extra = [list(names[row[base.shape[1]:]]) for row in got]
    assert extra[0] == ["c007", "c003"]  # the two most similar candidates, best first
    assert extra[1] == ["c000", names[base[1, 0]]]  # one neighbour; the gap repeats a retrieved class
    assert extra[2] == [names[base[2, 0]]] * 2 and extra[3] == [names[base[3, 0]]] * 2
    assert np.array_equal(Retriever(tower, pairs, ci, day, n=3, popular=1, new_days=1, new_max=None,
                                    similar=0, neighbours=nb, recent_items=["last_class_id"]
                                    ).candidates(users, "bike"), base)
    with pytest.raises(ValueError, match="retrieve_similar must be >= 0"):
        Retriever(tower, pairs, ci, day, n=3, similar=-1)


def test_a_users_strongest_affinities_bring_the_towers_best_of_their_classes(tmp_path):
    """With `affinity=k`, each list also ranks, for each of the user's k strongest affinities (in
    the order the affinity column holds them), the tower's best `affinity_classes` classes of
    that instructor; a user with fewer affinities, or an instructor with fewer classes, gets a
    retrieved class again in the gap; a class the index lacks is never one of them."""
    from ml.features import AFFINITY_COLUMN

    ci, vec = _index(tmp_path, n=30)
    ids = ci.platforms["bike"].class_ids.tolist()
    instructor = {c: ("i_a" if i < 10 else "i_b" if i < 12 else "i_c") for i, c in enumerate(ids)}
    cand = pl.DataFrame({"class_id": [*ids, "c999"], "instructor_id": [*instructor.values(), "i_a"],
                         "release_date": [dt.date(2026, 8, 1)] * 30 + [dt.date(2026, 9, 3)]})
    popular = pl.DataFrame({"platform": ["bike"], "rank": [1], "class_id": ["c020"]})
    day = DayInputs(feature_date=dt.date(2026, 9, 3), serve_date=dt.date(2026, 9, 4),
                    candidates={"bike": cand}, popular=popular, default_hour={"bike": 18}, n_users=3)
    queries = vec[[12, 13, 14]]
    tower = SimpleNamespace(users=lambda dense, sparse: queries)
    pairs = SimpleNamespace(encode_users=lambda frame, pairs=True: SimpleNamespace(dense=None, sparse=None))

    def aff(*keys):
        return [{"column": "instructor_id", "key": k, "share_56d": 1.0 / (j + 1)} for j, k in enumerate(keys)]

    users = pl.DataFrame({"user_id": ["u1", "u2", "u3"],
                          AFFINITY_COLUMN: [aff("i_a", "i_b", "i_c"), aff("i_b"), None]})
    plain = Retriever(tower, pairs, ci, day, n=3, popular=1, new_days=1)
    r = Retriever(tower, pairs, ci, day, n=3, popular=1, new_days=1, affinity=2, affinity_classes=3)
    base, got = plain.candidates(users, "bike"), r.candidates(users, "bike")
    np.testing.assert_array_equal(got[:, :base.shape[1]], base)
    assert got.shape[1] == base.shape[1] + 2 * 3
    names = cand["class_id"].to_numpy()

    def best(q, teacher, k):
        return {c for c in sorted((c for c in ids if instructor[c] == teacher),
                                  key=lambda c: -float(vec[int(c[1:])] @ q))[:k]}

    extra = [list(names[row[base.shape[1]:]]) for row in got]
    held = [names[row[0]] for row in base]  # the tower's best: what fills a gap
    assert set(extra[0][:3]) == best(queries[0], "i_a", 3)  # the strongest first; c999 has no vector
    assert set(extra[0][3:5]) == {"c010", "c011"} and extra[0][5] == held[0]  # i_b has 2 classes
    assert set(extra[1][:2]) == {"c010", "c011"} and extra[1][2:] == [held[1]] * 4  # one affinity
    assert extra[2] == [held[2]] * 6  # none
    with pytest.raises(ValueError, match="retrieve_affinity must be >= 0"):
        Retriever(tower, pairs, ci, day, n=3, affinity=-1)
