"""benchmarks/big_tables.py: the three paths run in rounds; the fused path's ratios pair the runs
of one round, and the median run stands for each path."""

from __future__ import annotations

import pytest

from benchmarks.big_tables import summary, table


def _runs(rates: list[float]) -> list[dict]:
    return [{"samples_per_s": r, "peak_rss_mib": 100.0 + i, "rss_batches_mib": 10.0} for i, r in enumerate(rates)]


def test_ratios_pair_the_runs_of_one_round():
    # round 2 is slow for everyone: paired, the fused path is ahead of SparseAdam in every round
    runs = {"fused": _runs([110, 55, 120]), "dense": _runs([10, 5, 10]), "sparse_adam": _runs([100, 50, 100])}
    out = summary(runs)
    assert out["fused_vs_sparse_adam"] == pytest.approx(1.1)
    assert out["fused_vs_sparse_adam_range"] == pytest.approx([1.1, 1.2])
    assert out["fused_vs_dense"] == pytest.approx(11.0)
    assert out["fused_vs_dense_range"] == pytest.approx([11.0, 12.0])
    # the median run, and with an even count the lower of the two middle ones
    assert out["variants"]["fused"]["samples_per_s"] == 110
    assert summary({k: v[:2] for k, v in runs.items()})["variants"]["fused"]["samples_per_s"] == 55
    text = table({"rows_per_id_table": 1000, "dim": 8, "timed_batches": 2, "batch_size": 16, "rounds": 3,
                  **out})
    assert "| reference, sparse gradients (SparseAdam) | 100 | 1.10x [1.10-1.20] |" in text


def test_every_path_needs_a_run_in_every_round():
    with pytest.raises(ValueError):
        summary({"fused": _runs([1, 2]), "dense": _runs([1]), "sparse_adam": _runs([1, 2])})
