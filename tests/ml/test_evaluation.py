"""Ranking metrics, the pair encoder and the evaluation lists on a tiny Delta lakehouse."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from ml.datasets import FITNESS
from ml.evaluation import evaluate
from ml.features import AFFINITY_COLUMN, Encoders, default_spec
from ml.examples import read_examples
from ml.gold import GoldStore
from ml.lists import EvalSettings, build_lists
from ml.pairs import PairEncoder
from ml.rankers import ModelRanker, PopularityRanker
from ml.report import comparison_table
from tests.ml.tiny_gold import E1, E2, E3


# ---------------------------------------------------------------------------------------------
# a tiny lakehouse with scoring candidates (`candidates_lake`, tests/ml/conftest.py)


def test_pair_encoder_equals_transform_of_the_cross_join(candidates_lake):
    frame = read_examples(GoldStore(candidates_lake)).collect()
    enc = Encoders.fit(frame, default_spec())
    batch = build_lists(GoldStore(candidates_lake), E3, EvalSettings(days=[E3], exclude_days=0))[0]
    users = FITNESS.list_context(batch.users, "bike", E3)
    classes = batch.classes.with_columns(pl.lit(E3).alias("event_date"))
    pe = PairEncoder(enc)
    u, c = pe.encode_users(users), pe.encode_classes(classes)
    dense, sparse = pe.pairs(u, np.arange(users.height), c)
    # the reference: the explicit cross join with the affinity joined per (user, instructor),
    # as read_examples joins it for training
    aff = (pl.read_delta(f"{candidates_lake}/gold/user_instructor_affinity")
           .filter(pl.col("feature_date") == E3 - dt.timedelta(days=1))
           .select("user_id", "instructor_id",
                   pl.col("share_56d").alias("user_instructor_share"),
                   pl.col("workouts_56d").cast(pl.Float64).alias("user_instructor_workouts")))
    cross = (users.drop("event_date", AFFINITY_COLUMN).join(classes, how="cross")
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


def test_evaluate_lists_exclusion_and_popularity(candidates_lake):
    # every user takes c1 every day: on E3 the lists' relevant class is c1
    s = EvalSettings(days=[E3], exclude_days=0, ks=(1, 2))
    res = evaluate(GoldStore(candidates_lake), [_Oracle(), PopularityRanker()], s)
    assert res.metric("perfect", "map@1") == pytest.approx(1.0)
    # popularity over the days before E3: c1 was taken by everyone
    assert res.metric("popularity", "map@1") == pytest.approx(1.0)
    lists = res.lists.filter(pl.col("ranker") == "perfect")
    assert lists.height == 40 and set(lists["platform"]) == {"bike"}

    # the product never re-recommends a class taken in the last days: c1 is excluded, so no
    # ranker can hit it (it still counts as relevant)
    s2 = EvalSettings(days=[E3], exclude_days=7, ks=(1, 2))
    res2 = evaluate(GoldStore(candidates_lake), [_Oracle(), PopularityRanker()], s2)
    assert res2.metric("perfect", "hit@2") == 0.0
    assert "perfect" in comparison_table(res2, reference="popularity")


def _encoders(lake: str) -> Encoders:
    """Encoders fitted on the lakehouse's examples with their hour spread over the day (the rows
    are all at 7h), so every hour a list assumes has an id of its own and reaches the model."""
    frame = read_examples(GoldStore(lake)).collect()
    hours = pl.Series("hour_of_day", [i % 24 for i in range(frame.height)]).cast(frame.schema["hour_of_day"])
    return Encoders.fit(frame.with_columns(hours), default_spec())


class LinearFake:
    """A stand-in DLRM: per head, two sums (linear in every dense column plus a weight per id of
    every sparse column; fixed random weights) and their product, so whatever input changes, the
    scores change, and candidates rank differently for different users. Records each call's hours
    (decoded from the hour_of_day ids) and row count."""

    def __init__(self, enc: Encoders, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.enc = enc
        self.dense_w = torch.randn(len(enc.spec.dense), 2, 3, generator=g)
        self.sparse_w = [torch.randn(card, 2, 3, generator=g) for card in enc.cardinalities()]
        self.calls: list[tuple[frozenset, int]] = []

    def __call__(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        ids = sparse[:, self.enc.spec.sparse.index("hour_of_day")].unique().tolist()
        vocab = self.enc.vocab["hour_of_day"]
        self.calls.append((frozenset(int(vocab[i - 1]) if i > 0 else None for i in ids), dense.shape[0]))
        out = torch.einsum("nd,dkh->nkh", dense, self.dense_w)
        for j, w in enumerate(self.sparse_w):
            out = out + w[sparse[:, j]]
        return out[:, 0] + out[:, 0] * out[:, 1]  # a product: user and class features interact


def _explicit_bike_frame(lake: str, users: pl.DataFrame, classes: pl.DataFrame, day: dt.date,
                         hours: list[int]) -> pl.DataFrame:
    """users x classes of the bike lists of `day`, user-major, the context written out by hand: the
    hour given per user, the day's weekday, no previous class (first of the session); each pair's
    affinity joined per (user, instructor) as read_examples joins it for training."""
    aff = (pl.read_delta(f"{lake}/gold/user_instructor_affinity")
           .filter(pl.col("feature_date") == day - dt.timedelta(days=1))
           .select("user_id", "instructor_id",
                   pl.col("share_56d").alias("user_instructor_share"),
                   pl.col("workouts_56d").cast(pl.Float64).alias("user_instructor_workouts")))
    ctx = users.drop(AFFINITY_COLUMN).with_columns(
        platform=pl.lit("bike"), hour_of_day=pl.Series(hours, dtype=pl.Int32),
        day_of_week=pl.lit(day.isoweekday(), pl.Int32), is_weekend=pl.lit(day.isoweekday() >= 6),
        prev_discipline=pl.lit(None, pl.Utf8), prev_body_focus=pl.lit(None, pl.Utf8),
        prev_duration_min=pl.lit(None, pl.Int32), minutes_since_prev=pl.lit(None, pl.Float64),
        position_in_session=pl.lit(1, pl.Int32))
    return (ctx.join(classes.with_columns(event_date=pl.lit(day)), how="cross")
            .join(aff, on=["user_id", "instructor_id"], how="left", maintain_order="left"))


def _log_take(fake: LinearFake, enc: Encoders, frame: pl.DataFrame, n_users: int) -> np.ndarray:
    """[users, classes] log P(take) of the fake on an explicit frame (take = head 0)."""
    batch = enc.transform(frame)
    with torch.no_grad():
        logits = fake(batch.dense, batch.sparse)[:, 0].double()
    return torch.nn.functional.logsigmoid(logits).numpy().reshape(n_users, -1)


def _usual_hours(n: int) -> list[float]:
    """Usual hours spread over the day, some off the full hour (the list rounds them)."""
    return [5 + (7 * i) % 17 + (0.4, -0.3, 0.0)[i % 3] for i in range(n)]


def test_model_ranker_scores_are_the_model_on_the_explicit_list_frame(candidates_lake):
    enc = _encoders(candidates_lake)
    fake = LinearFake(enc)
    batch = build_lists(GoldStore(candidates_lake), E3, EvalSettings(days=[E3], exclude_days=0))[0]
    usual = _usual_hours(batch.users.height)
    batch.users = batch.users.with_columns(usual_hour_bike=pl.Series(usual))
    got = ModelRanker("m", fake, enc).score(batch)
    # c1, c2 and c3 (released on E2, so a candidate from E3 on), every user at their usual hour
    assert got.shape == batch.relevant.shape == (40, 3)
    assert sum(n for _, n in fake.calls) == 40 * 3
    frame = _explicit_bike_frame(candidates_lake, batch.users, batch.classes, E3, [round(h) for h in usual])
    assert frame["user_instructor_share"].drop_nulls().len() > 0
    fake.calls.clear()
    want = _log_take(fake, enc, frame, batch.users.height)
    # not a degenerate case: the candidates' order differs between users
    assert len({tuple(np.argsort(-row)) for row in want}) > 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_no_lists_is_a_clear_error(candidates_lake):
    with pytest.raises(ValueError, match="no evaluation lists"):
        evaluate(GoldStore(candidates_lake), [PopularityRanker()], EvalSettings(days=[E1 - dt.timedelta(days=30)]))


def test_user_fraction_downsamples_whole_users(candidates_lake):
    full = build_lists(GoldStore(candidates_lake), E2, EvalSettings(days=[E2]))[0]
    half = build_lists(GoldStore(candidates_lake), E2, EvalSettings(days=[E2], user_fraction=0.5, seed=3))[0]
    assert 0 < half.users.height < full.users.height
    assert set(half.users["user_id"]) <= set(full.users["user_id"])


def test_user_without_usual_hour_is_scored_over_several_hours(candidates_lake):
    """A list for a user with no usual hour averages the take probability over UNKNOWN_HOURS."""
    from ml.rankers import UNKNOWN_HOURS

    enc = _encoders(candidates_lake)
    fake = LinearFake(enc)
    batch = build_lists(GoldStore(candidates_lake), E3, EvalSettings(days=[E3], exclude_days=0))[0]
    cold = {"u3", "u25"}  # with and without instructor affinities
    usual = [None if u in cold else h for u, h in zip(batch.users["user_id"], _usual_hours(batch.users.height))]
    batch.users = batch.users.with_columns(usual_hour_bike=pl.Series(usual, dtype=pl.Float64))
    got = ModelRanker("m", fake, enc).score(batch)
    n_users, n_classes = got.shape
    # the hours scored: every other user once, at their own hour; the two cold users once per hour
    known = frozenset(round(h) for h in usual if h is not None)
    assert sorted(fake.calls, key=repr) == sorted(
        [(known, (n_users - 2) * n_classes)] + [(frozenset({h}), 2 * n_classes) for h in UNKNOWN_HOURS], key=repr)

    at_usual = _log_take(fake, enc, _explicit_bike_frame(
        candidates_lake, batch.users, batch.classes, E3, [7 if h is None else round(h) for h in usual]), n_users)
    per_hour = [_log_take(fake, enc, _explicit_bike_frame(
        candidates_lake, batch.users, batch.classes, E3, [h] * n_users), n_users) for h in UNKNOWN_HOURS]
    averaged = np.log(np.mean(np.exp(per_hour), axis=0))
    is_cold = batch.users["user_id"].is_in(list(cold)).to_numpy()
    assert is_cold.sum() == 2
    np.testing.assert_allclose(got[~is_cold], at_usual[~is_cold], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[is_cold], averaged[is_cold], rtol=1e-5, atol=1e-6)
    # the average is not any single hour's score
    assert all(np.abs(averaged[is_cold] - p[is_cold]).max() > 1e-3 for p in per_hour)


def test_a_dlrm_ranker_is_scored_factorized_equal_to_its_explicit_pairs(candidates_lake):
    """A ranker of a real DLRM (`torch_score_fn`) scores by side, as the explicit pairs do."""
    from ml.rankers import torch_score_fn
    from tests.ml.test_factorized import _setup

    model, _, enc, _, _, _ = _setup(candidates_lake)
    batch = build_lists(GoldStore(candidates_lake), E3, EvalSettings(days=[E3], exclude_days=0))[0]
    usual = _usual_hours(batch.users.height)
    usual[0] = None  # one user without a usual hour: the mean over several hours
    batch.users = batch.users.with_columns(usual_hour_bike=pl.Series(usual, dtype=pl.Float64))
    fast = ModelRanker("m", torch_score_fn(model), enc)
    assert fast.fast is not None
    assert ModelRanker("m", model, enc).fast is not None  # a module itself, as the assets pass it
    explicit = ModelRanker("m", lambda d, s: model(d, s), enc)
    assert explicit.fast is None
    with torch.no_grad():
        want = explicit.score(batch)
    got = fast.score(batch)
    assert len({tuple(np.argsort(-row)) for row in want}) > 1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
