"""The factorized scorer equals the DLRM applied to every explicit (query, class) pair."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from ml.datasets import FITNESS
from ml.factorized import FactorizedDLRM, factorized_score_matrix
from ml.features import Encoders, default_spec
from ml.examples import read_examples
from ml.gold import GoldStore
from ml.lists import EvalSettings, build_lists
from ml.model import ModelConfig, build_model
from ml.pairs import PairEncoder, score_matrix
from tests.ml.tiny_gold import E3


def _setup(candidates_lake, seed=0):
    frame = read_examples(GoldStore(candidates_lake)).collect()
    enc = Encoders.fit(frame, default_spec())
    torch.manual_seed(seed)
    cfg = ModelConfig(sparse_cardinalities=enc.cardinalities(), n_dense=len(enc.spec.dense),
                      embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[32, 16],
                      sparse_names=list(enc.spec.sparse))
    model = build_model(cfg, "reference").eval()
    with torch.no_grad():  # embeddings and biases far from zero, so every term matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    batch = build_lists(GoldStore(candidates_lake), E3, EvalSettings(days=[E3], exclude_days=0))[0]
    pe = PairEncoder(enc)
    users = pe.encode_users(FITNESS.list_context(batch.users, "bike", E3, hour=7))
    classes = pe.encode_classes(batch.classes.with_columns(pl.lit(E3).alias("event_date")))
    return model, cfg, enc, pe, users, classes


@pytest.mark.parametrize("max_pairs", [5, 1_000_000])
def test_factorized_equals_the_model_on_explicit_pairs(candidates_lake, max_pairs):
    model, cfg, enc, pe, users, classes = _setup(candidates_lake)
    ref = score_matrix(lambda d, s: model(d, s), pe, users, classes, head=0)
    fast = FactorizedDLRM(model.state_dict(), enc.spec, cfg.heads, head="take")
    got = factorized_score_matrix(fast, pe, users, classes, max_pairs=max_pairs)
    assert got.shape == ref.shape == (40, 3)
    assert np.abs(ref).max() > 0.1  # not a degenerate all-zero model
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_other_heads_and_bf16_keep_the_ranking(candidates_lake):
    model, cfg, enc, pe, users, classes = _setup(candidates_lake, seed=1)
    ref = score_matrix(lambda d, s: model(d, s), pe, users, classes, head=2)
    fast = FactorizedDLRM(model.state_dict(), enc.spec, cfg.heads, head=cfg.heads[2])
    np.testing.assert_allclose(factorized_score_matrix(fast, pe, users, classes), ref,
                               atol=1e-4, rtol=1e-4)
    bf16 = FactorizedDLRM(model.state_dict(), enc.spec, cfg.heads, head=cfg.heads[2],
                          dtype=torch.bfloat16)
    approx = factorized_score_matrix(bf16, pe, users, classes)
    assert np.abs(approx - ref).max() < 0.05 * (np.abs(ref).max() + 1)
    # each query's own classes (retrieve then rank) take the other path through the top MLP
    idx = np.random.default_rng(0).integers(0, ref.shape[1], size=(ref.shape[0], 2))
    own = factorized_score_matrix(bf16, pe, users, classes, idx=idx)
    assert np.abs(own - np.take_along_axis(ref, idx, axis=1)).max() < 0.05 * (np.abs(ref).max() + 1)


def test_dcn_models_are_refused(candidates_lake):
    model, cfg, enc, *_ = _setup(candidates_lake)
    dcn = build_model(ModelConfig(**{**cfg.__dict__, "interaction": "dcn"}), "reference")
    with pytest.raises(ValueError, match="dot-interaction"):
        FactorizedDLRM(dcn.state_dict(), enc.spec, cfg.heads)
