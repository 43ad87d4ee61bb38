"""Fixtures shared by the tests of `ml`: the tiny gold lakehouse with scoring candidates."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest


@pytest.fixture(scope="module")
def candidates_lake(tmp_path_factory) -> str:
    """tests/ml/tiny_gold.build_lakehouse plus gold scoring_candidates (every released class
    on the bike, serve days E1..E3) and user_instructor_affinity (u1..u20 mostly ride with i1,
    some with i2; u21..u40 have none)."""
    from tests.ml.tiny_gold import CLASSES, E1, E2, E3, build_lakehouse

    uri = build_lakehouse(tmp_path_factory.mktemp("eval"))
    rows = []
    for serve in (E1, E2, E3):
        for cid, (_, _, _, rel) in CLASSES.items():
            if rel <= serve - dt.timedelta(days=1):
                rows.append({"feature_date": serve - dt.timedelta(days=1), "serve_date": serve,
                             "platform": "bike", "class_id": cid})
    pl.DataFrame(rows).write_delta(f"{uri}/gold/scoring_candidates",
                                   delta_write_options={"partition_by": ["feature_date"]})
    aff = [{"feature_date": f, "user_id": f"u{n}", "instructor_id": inst,
            "workouts_56d": w, "share_56d": w / 10}
           for f in (E1, E2, E3) for n in range(1, 21)
           for inst, w in (("i1", 7 + n % 3), ("i2", 3 - n % 3))]
    pl.DataFrame(aff).write_delta(f"{uri}/gold/user_instructor_affinity",
                                  delta_write_options={"partition_by": ["feature_date"]})
    return uri


@pytest.fixture
def process_group():
    """Tear down a gloo group that the fused path creates, so no state leaks into other tests."""
    import torch.distributed as dist

    existed = dist.is_initialized()
    yield
    if not existed and dist.is_initialized():
        dist.destroy_process_group()
