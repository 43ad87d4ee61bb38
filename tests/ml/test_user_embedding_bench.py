"""benchmarks/user_embedding_bench.py: a tower trained before the DLRM's window gives each
user-day a vector; the DLRM with them as features is judged beside the base on the same lists."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from benchmarks import user_embedding_bench as bench


def test_the_dlrm_with_user_embeddings_is_judged_on_the_base_lists(candidates_lake, tmp_path, monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_MAPPING", raising=False)
    out = tmp_path / "user_embeddings.json"
    base = {"train_days": 1, "epochs": 1, "batch_size": 32, "embedding_dim": 4, "bottom_mlp": [8, 4],
            "top_mlp": [8]}
    bench.main(["--lakehouse", candidates_lake, "--base", json.dumps(base), "--tower-days", "5",
                "--tower-epochs", "1", "--exclude-days", "0", "--out", str(out)])
    got = json.loads(out.read_text())
    # the tower ends the day before the DLRM's first training day: no vector saw its days
    tower_end = dt.date.fromisoformat(got["tower"]["train_end"])
    assert tower_end == dt.date.fromisoformat(got["dlrm_window"]["train_start"]) - dt.timedelta(days=1)
    assert got["tower"]["user_days"] > 0
    base_row, variant = got["rows"]
    assert variant["config"]["add_features"] == ["user_emb_*"]
    dim = got["tower"]["dim"]
    assert variant["features"]["dense"] == base_row["features"]["dense"] + dim
    assert variant["base_over"]["lists"] == got["lists"] > 0
    # the source lakehouse is read, never written
    assert not any(c.startswith("user_emb_") for c in
                   pl.scan_delta(f"{candidates_lake}/gold/user_features_daily").collect_schema().names())


def test_embedding_columns_average_a_users_platform_vectors():
    rows = pl.DataFrame({"feature_date": [dt.date(2025, 3, 1)] * 3, "user_id": ["a", "a", "b"],
                         "embedding": [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]})
    wide = bench.embedding_frame(rows, 2).sort("user_id")
    assert wide.columns == ["feature_date", "user_id", "user_emb_00", "user_emb_01"]
    assert wide["user_emb_00"].to_list() == pytest.approx([0.5, 2.0])
    assert wide["user_emb_01"].to_list() == pytest.approx([0.5, 2.0])


def test_no_day_before_the_window_is_refused(candidates_lake, tmp_path, monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_MAPPING", raising=False)
    with pytest.raises(SystemExit, match="no event day before the DLRM's first training day"):
        bench.main(["--lakehouse", candidates_lake, "--base", json.dumps({"train_days": 5}),
                    "--out", str(tmp_path / "x.json")])
