"""benchmarks/ablations.py: variants of one config trained on one window and compared on the
same held-out lists, each ratio with its interval; a variant naming no feature is refused."""

from __future__ import annotations

import json

import pytest

from benchmarks import ablations
from ml.features import FeatureError, default_spec, mapped_spec
from ml.workflow import FM_KNOBS


def test_variants_are_compared_on_the_same_lists(candidates_lake, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LAKEHOUSE_MAPPING", raising=False)  # the fitness dataset
    out = tmp_path / "ablations.json"
    base = {"train_days": 2, "epochs": 1, "batch_size": 32, "embedding_dim": 4, "bottom_mlp": [8, 4],
            "top_mlp": [8]}
    # the tiny lake's users repeat their classes: nothing is left out, so lists have relevant ones
    ablations.main(["--lakehouse", candidates_lake, "--base", json.dumps(base), "--eval-fraction", "1",
                    "--exclude-days", "0", "--out", str(out), "--variants",
                    json.dumps({"no_class_age": {"drop_features": ["class_age_days"]}})])
    got = json.loads(out.read_text())
    base_row, variant = got["rows"]
    assert (base_row["name"], variant["name"]) == ("base", "no_class_age")
    assert variant["config"]["drop_features"] == ["class_age_days"] and base_row["base_over"] is None
    cmp = variant["base_over"]
    assert variant["map@10"] > 0 and base_row["map@10"] > 0
    assert cmp["lists"] == got["lists"] > 0  # the same lists as the base's comparison to popularity
    assert cmp["ratio"] == pytest.approx(base_row["map@10"] / variant["map@10"])
    assert cmp["low"] <= cmp["ratio"] <= cmp["high"]
    assert "| no_class_age" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"variant 'longer' sets \['train_days'\]"):
        ablations.main(["--lakehouse", candidates_lake, "--base", json.dumps(base), "--out", str(out),
                        "--variants", json.dumps({"longer": {"train_days": 3}})])
    with pytest.raises(FeatureError, match=r"drop_features: \['last_item_\*'\] match no feature"):
        ablations.main(["--lakehouse", candidates_lake, "--base", json.dumps(base), "--out", str(out),
                        "--variants", json.dumps({"x": {"drop_features": ["last_item_*"]}})])


def test_the_default_variants_drop_the_recent_state_only_where_the_data_has_one():
    # fitness data has no recent state to drop: the factorization-machine form alone
    assert ablations.default_variants(default_spec()) == {"fm": FM_KNOBS}
    spec = mapped_spec({"user_id": "str", "last_platform": "str", "last_item_attr_genre": "str"},
                       {"class_id": "str"}, {"user_id": "str", "class_id": "str", "platform": "str"})
    assert ablations.default_variants(spec) == {"fm": FM_KNOBS, "no_recent_state": ablations.RECENT_STATE}


def test_an_earlier_window_and_the_scoring_speed_of_each_model(candidates_lake, tmp_path, monkeypatch, capsys):
    # --end: choose on earlier days, keep the latest to confirm; --speed-users: the cost side
    from tests.ml.tiny_gold import E1, E2

    monkeypatch.delenv("LAKEHOUSE_MAPPING", raising=False)
    out = tmp_path / "ablations.json"
    base = {"train_days": 1, "epochs": 1, "batch_size": 32, "embedding_dim": 4, "bottom_mlp": [8, 4],
            "top_mlp": [8]}
    ablations.main(["--lakehouse", candidates_lake, "--base", json.dumps(base), "--eval-fraction", "1",
                    "--exclude-days", "0", "--end", E2.isoformat(), "--speed-users", "30", "--out", str(out),
                    "--variants", json.dumps({"wider": {"top_mlp": [64, 64]}})])
    got = json.loads(out.read_text())
    assert got["held_out"] == E2.isoformat() and got["trained_on"] == E1.isoformat()
    assert got["speed_users"] == 30
    base_row, wider = got["rows"]
    assert base_row["speedup"] == 1.0 and base_row["users_per_s"] > 0 and wider["users_per_s"] > 0
    assert wider["speedup"] == pytest.approx(wider["users_per_s"] / base_row["users_per_s"], rel=0.01)
    assert "speed-up" in capsys.readouterr().out
