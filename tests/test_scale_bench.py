"""The scale benchmark, resumed stage by stage, reports the settings its champion was trained with."""

from __future__ import annotations

import json

from benchmarks import scale_bench


def test_a_resumed_daily_chain_reports_the_train_stages_model_config(tmp_path, monkeypatch):
    ran: list[list[str]] = []

    def measure(cmd, env):  # the stages' commands, not run: only what the bench records
        ran.append(cmd)
        return {"wall_s": 1.0, "peak_rss_mib": 1.0}

    monkeypatch.setattr(scale_bench, "measure", measure)
    monkeypatch.setattr(scale_bench, "champion", lambda env: True)
    monkeypatch.setattr(scale_bench, "step_seconds", lambda home, job: {})
    monkeypatch.setattr(scale_bench, "table_rows", lambda lake, layer, name: 10)
    small = '{"sample_fraction": 0.05, "top_mlp": [64, 32]}'
    common = ["--size", "medium", "--days", "2", "--workdir", str(tmp_path)]
    scale_bench.main([*common, "--stages", "simulate,backfill,train", "--model-config", small])
    assert small in ran[-1]  # the train stage ran with it
    out = tmp_path / "out.json"
    scale_bench.main([*common, "--stages", "daily_chain", "--out", str(out)])  # no --model-config
    got = json.loads(out.read_text())
    assert got["params"]["model_config"] == small
    assert got["stages"]["train"]["model_config"] == small
    assert set(got["stages"]) == {"simulate", "backfill", "train", "daily_chain"}
