"""`precision: auto` takes whichever of bf16 and fp32 is faster on the machine (bf16 is ~40x
slower than fp32 on a CPU without native bf16); fp32 and bf16 are kept as asked."""

from __future__ import annotations

import pytest

from ml import precision
from ml.rows import InferenceSettings


@pytest.mark.parametrize("bf16_s, want", [(0.001, "bf16"), (0.5, "fp32")])
def test_auto_takes_the_faster_one(monkeypatch, bf16_s, want):
    monkeypatch.setattr(precision, "_seconds", lambda device: {"bfloat16": bf16_s, "float32": 0.01})
    precision.bf16_is_faster.cache_clear()
    try:
        assert precision.resolve_precision("auto") == want
        assert precision.resolve_precision("fp32") == "fp32"
        assert precision.resolve_precision("bf16") == "bf16"
    finally:
        precision.bf16_is_faster.cache_clear()


def test_the_measurement_runs_here_and_a_bad_value_is_refused():
    assert precision.resolve_precision("auto") in ("fp32", "bf16")  # real timings, this machine
    best = precision._seconds("cpu", rounds=2)
    assert set(best) == {"bfloat16", "float32"} and min(best.values()) > 0
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        precision.resolve_precision("fp16")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        InferenceSettings(precision="fp16")
    assert InferenceSettings().precision == "auto"
