"""The DLRM in both backends: shapes, equal logits for equal weights, config validation."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ml.batch import HEADS
from ml.model import ModelConfig, ReferenceDLRM, TorchRecDLRM, build_model, to_kjt

CARDS = [5, 9, 3, 12]


def _config(**kw) -> ModelConfig:
    base = dict(
        sparse_cardinalities=CARDS, n_dense=3, embedding_dim=4, bottom_mlp=[8, 4], top_mlp=[8, 6]
    )
    base.update(kw)
    return ModelConfig(**base)


def _inputs(b: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(b, 3, generator=g)
    sparse = torch.stack([torch.randint(0, c, (b,), generator=g) for c in CARDS], dim=1)
    return dense, sparse


@pytest.mark.parametrize("backend", ["torchrec", "reference"])
@pytest.mark.parametrize("interaction", ["dot", "dcn"])
def test_output_shape(backend, interaction):
    model = build_model(_config(interaction=interaction), backend=backend)
    dense, sparse = _inputs()
    logits = model(dense, sparse)
    assert logits.shape == (7, len(HEADS))
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_backends_and_ebc_path():
    assert isinstance(build_model(_config()), TorchRecDLRM)
    assert isinstance(build_model(_config(), backend="reference"), ReferenceDLRM)
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    model = build_model(_config(), backend="torchrec")
    assert isinstance(model.sparse_arch.embedding_bag_collection, EmbeddingBagCollection)
    with pytest.raises(ValueError, match="backend"):
        build_model(_config(), backend="nope")


@pytest.mark.parametrize("interaction", ["dot", "dcn"])
def test_equal_weights_equal_logits(interaction):
    torch.manual_seed(3)
    trec = build_model(_config(interaction=interaction), backend="torchrec")
    ref = build_model(_config(interaction=interaction), backend="reference")
    assert set(trec.state_dict()) == set(ref.state_dict())
    dense, sparse = _inputs(b=16)
    assert not torch.allclose(trec(dense, sparse), ref(dense, sparse))  # different init
    ref.copy_weights_from(trec)
    torch.testing.assert_close(ref(dense, sparse), trec(dense, sparse), rtol=1e-6, atol=1e-6)
    # and the other direction, after changing the reference weights
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1)
    trec.copy_weights_from(ref)
    torch.testing.assert_close(trec(dense, sparse), ref(dense, sparse), rtol=1e-6, atol=1e-6)


def test_to_kjt_layout():
    sparse = torch.tensor([[1, 2], [3, 4], [5, 6]])
    kjt = to_kjt(sparse, ["a", "b"])
    assert kjt.keys() == ["a", "b"]
    assert kjt.values().tolist() == [1, 3, 5, 2, 4, 6]
    assert kjt.lengths().tolist() == [1] * 6
    assert kjt["b"].values().tolist() == [2, 4, 6]
    with pytest.raises(ValueError):
        to_kjt(sparse, ["a"])


def test_to_kjt_bags_hold_the_used_slots_of_each_row():
    # features a (one slot) and g (a bag of three slots; -1 = unused)
    sparse = torch.tensor([[1, 4, 2, -1], [3, -1, -1, -1], [5, 0, 7, 6]])
    kjt = to_kjt(sparse, ["a", "g"], [1, 3])
    assert kjt["a"].values().tolist() == [1, 3, 5] and kjt["a"].lengths().tolist() == [1, 1, 1]
    assert kjt["g"].values().tolist() == [4, 2, 0, 7, 6] and kjt["g"].lengths().tolist() == [2, 0, 3]
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        to_kjt(sparse[:, :3], ["a", "g"], [1, 3])


@pytest.mark.parametrize("interaction", ["dot", "dcn"])
def test_bags_are_mean_pooled_alike_in_both_backends(interaction):
    """A multi-hot feature (3 slots) pools to the mean of its values' rows (an empty bag to 0):
    TorchRec's MEAN pooling and the reference's masked mean give the same logits."""
    torch.manual_seed(5)
    config = _config(interaction=interaction, sparse_slots=[1, 3, 1, 1])
    trec, ref = build_model(config, "torchrec"), build_model(config, "reference")
    ref.copy_weights_from(trec)
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(16, 3, generator=g)
    bag = torch.randint(-1, CARDS[1], (16, 3), generator=g)
    bag[0] = -1  # an empty bag
    sparse = torch.cat([torch.randint(0, CARDS[0], (16, 1), generator=g), bag,
                        torch.randint(0, CARDS[2], (16, 1), generator=g),
                        torch.randint(0, CARDS[3], (16, 1), generator=g)], dim=1)
    torch.testing.assert_close(ref(dense, sparse), trec(dense, sparse), rtol=1e-6, atol=1e-6)
    weight = trec.sparse_arch.embedding_bag_collection.embedding_bags["t_f1"].weight
    emb = trec.sparse_arch(sparse)[:, 1]
    for row in range(16):
        ids = [int(i) for i in bag[row] if i >= 0]
        want = weight[ids].mean(dim=0) if ids else torch.zeros(4)
        torch.testing.assert_close(emb[row], want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="sparse_slots"):
        _config(sparse_slots=[1, 0, 1, 1])


def test_embedding_rows_match_ids():
    """Feature i's embedding is row sparse[:, i] of table i (OOV id 0 included)."""
    model = build_model(_config(), backend="torchrec")
    _, sparse = _inputs(b=5)
    sparse[0] = 0
    emb = model.sparse_arch(sparse)
    assert emb.shape == (5, len(CARDS), 4)
    tables = model.sparse_arch.embedding_bag_collection.embedding_bags
    for i, name in enumerate(model.config.table_names()):
        torch.testing.assert_close(emb[:, i], tables[name].weight[sparse[:, i]])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(bottom_mlp=[8, 5]), "embedding_dim"),
        (dict(interaction="mlp"), "interaction"),
        (dict(sparse_cardinalities=[]), "sparse"),
        (dict(sparse_cardinalities=[3, 0, 2, 2]), "cardinalit"),
        (dict(sparse_names=["a", "b"]), "sparse_names"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)


def test_custom_heads_and_names():
    cfg = _config(heads=("a", "b"), sparse_names=["w", "x", "y", "z"], top_mlp=[])
    for backend in ("torchrec", "reference"):
        model = build_model(cfg, backend=backend)
        assert model.head_names == ("a", "b")
        assert model(*_inputs()).shape == (7, 2)


def test_reference_import_stays_light():
    """ml.model / ml.optim / ml.train with the reference backend never import torchrec (~2.4 s)."""
    code = (
        "import sys, ml.model, ml.optim, ml.train\n"
        "cfg = ml.model.ModelConfig([3, 4], 2, embedding_dim=4, bottom_mlp=[4])\n"
        "m = ml.model.build_model(cfg, 'reference')\n"
        "ml.optim.setup_training(m, ml.train.TrainConfig())\n"
        "print('torchrec' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dot_interaction_is_upper_triangle_of_gram_matrix():
    from ml.model import DotInteraction

    dense, sparse = torch.randn(2, 3), torch.randn(2, 4, 3)
    out = DotInteraction(4)(dense, sparse)
    assert out.shape == (2, DotInteraction.out_features(4, 3)) == (2, 3 + 10)
    vecs = torch.cat([dense.unsqueeze(1), sparse], dim=1)
    expected = [vecs[:, i] @ vecs[:, j].T for i in range(5) for j in range(i + 1, 5)]
    torch.testing.assert_close(out[:, :3], dense)
    torch.testing.assert_close(out[:, 3:], torch.stack([e.diagonal() for e in expected], dim=1))


def test_the_sparse_reference_gives_the_same_logits_and_row_gradients_for_sparse_adam():
    dense_ref = ReferenceDLRM(_config())
    sparse_ref = ReferenceDLRM(_config(), sparse=True).copy_weights_from(dense_ref)
    assert set(sparse_ref.state_dict()) == set(dense_ref.state_dict())
    dense, sparse = _inputs(b=16)
    assert torch.equal(sparse_ref(dense, sparse), dense_ref(dense, sparse))
    sparse_ref(dense, sparse).sum().backward()
    grad = sparse_ref.sparse_arch.embedding_bag_collection.embedding_bags["t_f3"].weight.grad
    assert grad.is_sparse and set(grad.coalesce().indices()[0].tolist()) == set(sparse[:, 3].tolist())
    emb = [p for n, p in sparse_ref.named_parameters() if "sparse_arch." in n]
    torch.optim.SparseAdam(emb, lr=0.1).step()  # refuses a dense gradient
    dense_ref(dense, sparse).sum().backward()  # the default is unchanged: dense gradients
    assert not dense_ref.sparse_arch.embedding_bag_collection.embedding_bags["t_f3"].weight.grad.is_sparse
