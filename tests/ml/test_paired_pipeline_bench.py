"""benchmarks/paired_pipeline.py: a default training run in which each day of each epoch is
trained with the pipeline and from the same batches prepared beforehand, in alternating order;
the ratio of their seconds comes with an interval over the days."""

from __future__ import annotations

import pytest

from benchmarks import paired_pipeline
from benchmarks.train_bench import default_job


def test_each_day_is_trained_both_ways_on_the_same_rows(candidates_lake, monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_MAPPING", raising=False)  # the fitness dataset
    from ml.training_job import fit_encoders

    job = default_job(candidates_lake, 2, "reference", False, batch_size=16)
    assert (job.train.epochs, job.train.cache_mb > 0, job.train.batch_size) == (2, True, 16)
    out = paired_pipeline.paired_days(job, fit_encoders(job))

    legs = out["legs"]
    days = [str(d) for d in job.data.train_days()]
    assert (out["days"], out["epochs"]) == (2, 2)
    assert sorted((r["epoch"], r["day"]) for r in legs) == sorted((e, d) for e in (0, 1) for d in days)
    for r in legs:  # the same batches both ways: every row of the day, once
        assert r["pipeline_samples"] == r["step_samples"] > 0
        assert 0 <= r["pipeline_input_seconds"] <= r["pipeline_seconds"]
    # the order alternates from one day to the next
    assert {r["first"] for r in legs} == {"pipeline", "step"}

    first = out["first_epoch"]
    ones = [r for r in legs if r["epoch"] == 0]
    assert first["ratio"] == pytest.approx(sum(r["step_seconds"] for r in ones)
                                           / sum(r["pipeline_seconds"] for r in ones))
    assert first["low"] <= first["ratio"] <= first["high"] and first["groups"] == 2
    assert out["run"]["lists"] == 4 and out["run"]["groups"] == 2  # whole days resampled
    assert out["cached_epochs"]["lists"] == 2
    text = paired_pipeline.table({"reference": out})
    assert f"| reference | 2 | {first['ratio']:.2f} [" in text
