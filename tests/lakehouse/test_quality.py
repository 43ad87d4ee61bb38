"""Quality suites: a clean frame passes every check; each kind of breakage fails exactly its check.

The check engine is exercised on a suite with every kind of check (`engine_suite`, the shape of
the training_examples audit before its row rules moved to dbt); the gold suites themselves keep
only what dbt's tests cannot say (row volume, positive ratio): the gold tests below and
tests/dbt/test_gold_rules.py.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pandas as pd
import pytest

from lakehouse.contract import DISCIPLINES, ENTITIES, PLATFORMS
from lakehouse.quality import engine as quality_engine
from lakehouse.quality.checks import (
    AcceptedValues,
    NotNull,
    PositiveRatio,
    QualityGateError,
    Ranges,
    ReferentialIntegrity,
    RowVolume,
    SuiteSpec,
    UniqueKey,
    blocking_failures,
    format_failures,
    raise_for_blocking,
)
from lakehouse.quality.config import GOLD_TABLES, GX_ONLY_CHECKS, MAPPED_GOLD_TABLES, VOLUME_BAND
from lakehouse.quality.engine import run_suite, warm_up
from lakehouse.quality.suites import BRONZE_SUITES, gold_suite, training_examples_suite

DAY = dt.date(2024, 3, 4)
R = 4  # negatives per positive
N = 50  # rows of the clean training frame: 10 positives, 40 negatives

USERS = {f"u{i}" for i in range(10)}
CLASSES = {f"c{i}" for i in range(8)}
REFERENCE = {"users": USERS, "classes": pd.Series(sorted(CLASSES))}


def training_frame(n: int = N) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame(
        {
            "example_id": [f"e{k:04d}" for k in i],
            "user_id": [f"u{k % 10}" for k in i],
            "class_id": [f"c{k % 8}" for k in i],
            "platform": np.array(["bike", "tread", "app"])[i % 3],
            "hour_of_day": i % 24,
            "day_of_week": i % 7 + 1,  # ISO, as the dbt model writes it
            "label_take": (i % (R + 1) == 0).astype("int64"),
            "feature_date": DAY,
        }
    )


def user_features_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u2"],
            "feature_date": [DAY, DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=1)],
            "workouts_total": [3, 0, 4, 0],
            "workouts_7d": [3, 0, 2, 0],
            "completion_rate_28d": [1.0, None, 0.75, None],
            "top_instructor_share": [0.66, None, 0.5, None],
        }
    )


def by_name(outcomes):
    return {o.name: o for o in outcomes}


def failed(outcomes):
    return sorted(o.name for o in outcomes if not o.passed)


def engine_suite(r: float = R, day_of_week: tuple[int, int] = (1, 7)) -> SuiteSpec:
    """Every kind of check on a training-like frame (the engine's tests)."""
    return SuiteSpec(table="training_examples", checks=(
        UniqueKey(("example_id",)),
        NotNull(("user_id", "class_id", "platform", "label_take")),
        AcceptedValues({"platform": PLATFORMS, "label_take": (0, 1)}),
        Ranges({"hour_of_day": (0, 23), "day_of_week": day_of_week}),
        PositiveRatio("label_take", r),
        ReferentialIntegrity({"user_id": "users", "class_id": "classes"}),
        RowVolume(VOLUME_BAND),
    ))


def user_features_suite(**ranges) -> SuiteSpec:
    return SuiteSpec(table="user_features_daily", checks=(
        UniqueKey(("user_id", "feature_date")),
        NotNull(("user_id", "feature_date", "workouts_total")),
        Ranges(ranges or {"workouts_7d": (0, None), "completion_rate_28d": (0.0, 1.0),
                            "top_instructor_share": (0.0, 1.0)}),
        RowVolume(VOLUME_BAND),
    ))


@pytest.fixture(scope="module")
def te_suite():
    return engine_suite()


# ---------------------------------------------------------------- specs and blocking flags

def test_check_names_and_blocking_flags():
    # gold: what dbt's tests of the marts cannot say (the rest is dbt's: tests/dbt/test_gold_rules.py)
    expected = {
        "training_examples": {"positive_ratio": True, "row_volume_vs_previous": False},
        "user_features_daily": {"row_volume_vs_previous": False},
        "class_features_daily": {"row_volume_vs_previous": False},
    }
    suites = {t: gold_suite(t) for t in expected if t != "training_examples"}
    suites["training_examples"] = training_examples_suite(R)
    for table, flags in expected.items():
        assert {c.name: c.blocking for c in suites[table].checks} == flags, table
        assert not suites[table].reference_names
    mapped = training_examples_suite(R, tables=MAPPED_GOLD_TABLES)
    assert {c.name: c.blocking for c in mapped.checks} == {
        "positive_ratio": False, "row_volume_vs_previous": False}  # a small catalogue: warns
    with pytest.raises(KeyError, match="scoring_candidates"):
        gold_suite("scoring_candidates")  # dbt's tests and no_shrink only

    workouts = BRONZE_SUITES["workouts"]
    assert {c.name: c.blocking for c in workouts.checks} == {
        "unique_key": True, "not_null": True, "accepted_values": False, "ranges": False,
        "referential_integrity": True, "row_volume_vs_previous": False,
    }
    assert set(BRONZE_SUITES) == {e.name for e in ENTITIES}
    for name, spec in BRONZE_SUITES.items():
        assert spec.check("unique_key").blocking and spec.check("not_null").blocking
        assert not spec.check("row_volume_vs_previous").blocking
    assert BRONZE_SUITES["music_likes"].key == ("user_id", "class_id", "liked_ts")
    assert BRONZE_SUITES["classes"].reference_names == ("instructors",)
    assert BRONZE_SUITES["users"].check("ranges").bounds == {"birth_year": (1920, 2015)}


def test_gold_suites_hold_only_what_dbt_cannot_say():
    for tables in (GOLD_TABLES, MAPPED_GOLD_TABLES):
        for table in tables:
            spec = gold_suite(table, tables=tables, negatives_per_positive=R)
            assert set(spec.check_names) <= set(GX_ONLY_CHECKS), (table, spec.check_names)


def test_gold_training_examples_suite_on_staged_rows():
    spec = training_examples_suite(R)
    clean = run_suite(spec, training_frame(), previous_row_count=N)
    assert failed(clean) == [], format_failures(clean)
    df = training_frame()
    df.loc[df.index[1::5], "label_take"] = 1
    off = run_suite(spec, df, previous_row_count=N)
    assert failed(off) == ["positive_ratio"] and blocking_failures(off)
    mapped = run_suite(training_examples_suite(R, tables=MAPPED_GOLD_TABLES), df, previous_row_count=N)
    assert failed(mapped) == ["positive_ratio"] and not blocking_failures(mapped)


def test_training_examples_needs_the_ratio():
    with pytest.raises(ValueError, match="negatives_per_positive"):
        gold_suite("training_examples")
    assert training_examples_suite(4).check("positive_ratio").band == pytest.approx((0.16, 0.24))


# ---------------------------------------------------------------- training_examples

def test_clean_training_frame_passes_every_check(te_suite):
    outcomes = run_suite(te_suite, training_frame(), reference=REFERENCE, previous_row_count=N)
    assert [o.name for o in outcomes] == list(te_suite.check_names)
    assert failed(outcomes) == [], format_failures(outcomes)
    for o in outcomes:
        json.dumps(o.metadata)  # plain JSON for Dagster metadata
        assert o.severity == ("ERROR" if o.blocking else "WARN")
    assert by_name(outcomes)["positive_ratio"].metadata["observed_value"] == pytest.approx(0.2)
    raise_for_blocking(outcomes)


def _dup_key(df):
    df.loc[1, "example_id"] = df.loc[0, "example_id"]
    return df


def _null_user(df):
    df["user_id"] = df["user_id"].astype(object)
    df.loc[3, "user_id"] = None
    return df


def _bad_platform(df):
    df.loc[2, "platform"] = "rower"
    return df


def _bad_hour(df):
    df.loc[4, "hour_of_day"] = 24
    return df


def _ghost_user(df):
    df.loc[5, "user_id"] = "u_ghost"
    return df


BREAKAGES = [
    # (id, mutate, failing check, column, example value that must appear in the metadata)
    ("duplicate_key", _dup_key, "unique_key", "example_id", "e0000"),
    ("null_required", _null_user, "not_null", "user_id", {"example_id": "e0003", "user_id": None}),
    ("value_outside_set", _bad_platform, "accepted_values", "platform", "rower"),
    ("out_of_range", _bad_hour, "ranges", "hour_of_day", 24),
    ("unknown_reference", _ghost_user, "referential_integrity", "user_id", "u_ghost"),
]


@pytest.mark.parametrize("mutate,check,column,example",
                         [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_one_breakage_fails_exactly_its_check(te_suite, mutate, check, column, example):
    df = mutate(training_frame())
    outcomes = run_suite(te_suite, df, reference=REFERENCE, previous_row_count=N)
    assert failed(outcomes) == [check], format_failures(outcomes)
    o = by_name(outcomes)[check]
    assert o.blocking and o.severity == "ERROR"
    assert o.metadata["failed_columns"] == [column]
    assert o.metadata["unexpected_count"] >= 1
    assert example in o.metadata["examples"][column]
    # the message names the table, the check, the column and an offending value
    assert "training_examples" in o.description and f"'{check}'" in o.description
    assert f"'{column}'" in o.description
    shown = example[column] if isinstance(example, dict) else example
    assert repr(shown) in o.description or str(shown) in o.description
    with pytest.raises(QualityGateError, match=check):
        raise_for_blocking(outcomes)


def test_example_rows_carry_the_key(te_suite):
    outcomes = run_suite(te_suite, _bad_platform(training_frame()), reference=REFERENCE)
    rows = by_name(outcomes)["accepted_values"].metadata["example_rows"]["platform"]
    assert rows == [{"example_id": "e0002", "platform": "rower"}]


def test_row_volume_collapse_warns(te_suite):
    outcomes = run_suite(te_suite, training_frame(), reference=REFERENCE,
                           previous_row_count=10 * N)
    assert failed(outcomes) == ["row_volume_vs_previous"]
    o = by_name(outcomes)["row_volume_vs_previous"]
    assert not o.blocking and o.severity == "WARN"
    assert o.metadata["observed_rows"] == N and o.metadata["previous_row_count"] == 10 * N
    assert o.metadata["ratio"] == pytest.approx(0.1)
    assert "ratio 0.10" in o.description
    raise_for_blocking(outcomes)  # a warning does not block


def test_row_volume_band_edges(te_suite):
    df = training_frame()
    ok_low = run_suite(te_suite, df, reference=REFERENCE, previous_row_count=2 * N)
    ok_high = run_suite(te_suite, df, reference=REFERENCE, previous_row_count=N // 2)
    too_high = run_suite(te_suite, df, reference=REFERENCE, previous_row_count=N // 2 - 1)
    assert failed(ok_low) == [] and failed(ok_high) == []
    assert failed(too_high) == ["row_volume_vs_previous"]


def test_row_volume_skipped_without_previous_partition(te_suite):
    outcomes = run_suite(te_suite, training_frame(), reference=REFERENCE)
    o = by_name(outcomes)["row_volume_vs_previous"]
    assert o.passed and o.metadata["skipped"] is True
    assert "no previous partition" in o.metadata["note"]


def test_positive_ratio_off(te_suite):
    df = training_frame()
    df.loc[df.index[1::5], "label_take"] = 1  # 20 positives of 50: share 0.4, band 0.16-0.24
    outcomes = run_suite(te_suite, df, reference=REFERENCE, previous_row_count=N)
    assert failed(outcomes) == ["positive_ratio"]
    o = by_name(outcomes)["positive_ratio"]
    assert o.blocking
    assert o.metadata["observed_value"] == pytest.approx(0.4)
    assert o.metadata["positives"] == 20
    assert o.metadata["band"] == pytest.approx([0.16, 0.24])
    assert "0.4000" in o.description and "'label_take'" in o.description


def test_day_of_week_range_is_a_parameter():
    df = training_frame()
    df["day_of_week"] = df["day_of_week"] - 1  # 0..6 instead of ISO 1..7
    default = run_suite(engine_suite(), df, reference=REFERENCE)
    assert failed(default) == ["ranges"]
    assert 0 in by_name(default)["ranges"].metadata["examples"]["day_of_week"]
    zero_based = run_suite(engine_suite(day_of_week=(0, 6)), df, reference=REFERENCE)
    assert failed(zero_based) == []


@pytest.mark.parametrize("limit", [10_000, 0], ids=["gx_in_set", "pandas_isin"])
def test_referential_integrity_engines_agree(te_suite, monkeypatch, limit):
    monkeypatch.setattr(quality_engine, "GX_VALUE_SET_LIMIT", limit)
    df = _ghost_user(training_frame())
    df.loc[6, "class_id"] = "c_ghost"
    o = by_name(run_suite(te_suite, df, reference=REFERENCE))["referential_integrity"]
    assert not o.passed
    assert o.metadata["failed_columns"] == ["user_id", "class_id"]
    assert o.metadata["examples"] == {"user_id": ["u_ghost"], "class_id": ["c_ghost"]}
    assert o.metadata["unexpected_count"] == 2
    engine = "pandas" if limit == 0 else "great_expectations"
    assert {d["engine"] for d in o.metadata["details"].values()} == {engine}
    assert "'u_ghost'" in o.description and "'c_ghost'" in o.description


def test_large_reference_sets_from_polars_and_arrow_on_arrow_strings(te_suite, monkeypatch):
    """Ingest passes bronze's known ids as Arrow (polars) arrays, and its frames hold Arrow-backed
    strings: the large-set path checks them in Arrow and names the same unknown ids."""
    import polars as pl
    import pyarrow as pa

    monkeypatch.setattr(quality_engine, "GX_VALUE_SET_LIMIT", 0)
    df = _ghost_user(training_frame())
    df.loc[6, "class_id"] = "c_ghost"
    df = df.astype({"user_id": "string[pyarrow]", "class_id": "string[pyarrow]"})
    reference = {"users": pl.Series(sorted(USERS) + [None]), "classes": pa.array(sorted(CLASSES))}
    o = by_name(run_suite(te_suite, df, reference=reference))["referential_integrity"]
    assert not o.passed and o.metadata["unexpected_count"] == 2
    assert o.metadata["examples"] == {"user_id": ["u_ghost"], "class_id": ["c_ghost"]}
    ok = by_name(run_suite(te_suite, training_frame().astype({"user_id": "string[pyarrow]"}),
                           reference=reference))["referential_integrity"]
    assert ok.passed


@pytest.mark.parametrize("empty", [[], np.array([], dtype=object), pd.Series([], dtype=str)],
                         ids=["list", "ndarray", "series"])
def test_empty_reference_set_rejects_every_id(te_suite, empty):
    o = by_name(run_suite(te_suite, training_frame(),
                            reference={"users": empty, "classes": CLASSES}))["referential_integrity"]
    assert not o.passed and o.metadata["failed_columns"] == ["user_id"]
    assert o.metadata["unexpected_count"] == N


def test_reference_as_array_with_nulls(te_suite):
    ids = np.array(sorted(USERS) + [None], dtype=object)
    o = by_name(run_suite(te_suite, training_frame(),
                            reference={"users": ids, "classes": CLASSES}))["referential_integrity"]
    assert o.passed


def test_missing_reference_set_fails_loudly(te_suite):
    outcomes = run_suite(te_suite, training_frame(), reference={"users": USERS})
    assert failed(outcomes) == ["referential_integrity"]
    o = by_name(outcomes)["referential_integrity"]
    assert "'classes'" in o.description and "not provided" in o.description


# ---------------------------------------------------------------- gold feature marts

def test_user_features_clean_and_missing_column():
    spec = user_features_suite()
    assert failed(run_suite(spec, user_features_frame(), previous_row_count=4)) == []

    df = user_features_frame().drop(columns=["top_instructor_share"])
    outcomes = run_suite(spec, df, previous_row_count=4)
    assert failed(outcomes) == ["ranges"]
    o = by_name(outcomes)["ranges"]
    assert o.metadata["missing_columns"] == ["top_instructor_share"]
    assert "'top_instructor_share' is missing" in o.description
    assert "user_features_daily" in o.description


def test_user_features_compound_key_and_rate_range():
    spec = user_features_suite()
    df = user_features_frame()
    df.loc[2, "feature_date"] = DAY  # (u1, DAY) twice
    df.loc[3, "completion_rate_28d"] = 1.5
    outcomes = run_suite(spec, df)
    assert failed(outcomes) == ["ranges", "unique_key"]
    key = by_name(outcomes)["unique_key"]
    assert key.metadata["examples"]["user_id,feature_date"][0] == {
        "user_id": "u1", "feature_date": DAY.isoformat()}
    assert "(user_id, feature_date)" in key.description
    rng = by_name(outcomes)["ranges"]
    assert rng.metadata["examples"] == {"completion_rate_28d": [1.5]}


def test_class_features_and_scoring_candidates():
    classes = pd.DataFrame({
        "class_id": ["c1", "c2"], "feature_date": [DAY, DAY], "discipline": ["yoga", "cycling"],
        "age_days": [0, 12], "completion_rate": [0.9, 0.5], "music_like_rate": [0.2, 0.0],
        "take_rate_7d": [0.1, 0.0],
    })
    spec = SuiteSpec(table="class_features_daily", checks=(
        UniqueKey(("class_id", "feature_date")),
        NotNull(("class_id", "feature_date", "discipline")),
        AcceptedValues({"discipline": DISCIPLINES}),
        Ranges({"age_days": (0, None), "completion_rate": (0.0, 1.0), "music_like_rate": (0.0, 1.0),
                  "take_rate_7d": (0.0, 1.0)}),
    ))
    assert failed(run_suite(spec, classes)) == []
    classes.loc[1, "discipline"] = "jousting"
    classes.loc[0, "age_days"] = -1
    out = run_suite(spec, classes)
    assert failed(out) == ["accepted_values", "ranges"]
    assert by_name(out)["accepted_values"].metadata["examples"] == {"discipline": ["jousting"]}
    assert by_name(out)["ranges"].metadata["examples"] == {"age_days": [-1]}

    cands = pd.DataFrame({"feature_date": [DAY] * 3, "platform": ["bike", "app", "app"],
                          "class_id": ["c1", "c1", "c2"]})
    spec = SuiteSpec(table="scoring_candidates", checks=(
        UniqueKey(("feature_date", "platform", "class_id")),
        NotNull(("feature_date", "platform", "class_id")),
        AcceptedValues({"platform": PLATFORMS}),
    ))
    assert failed(run_suite(spec, cands)) == []
    cands.loc[2, "class_id"] = "c1"
    assert failed(run_suite(spec, cands)) == ["unique_key"]


def test_a_rename_is_one_override():
    spec = gold_suite("training_examples", negatives_per_positive=R, positive_ratio="is_taken")
    df = training_frame().rename(columns={"label_take": "is_taken"})
    assert failed(run_suite(spec, df, previous_row_count=N)) == []


# ---------------------------------------------------------------- bronze, from the contract

def workouts_frame() -> pd.DataFrame:
    start = pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(hours=7)
    return pd.DataFrame({
        "workout_id": ["w1", "w2", "w3"],
        "user_id": ["u1", "u2", "u1"],
        "class_id": ["c1", "c2", "c3"],
        "platform": ["bike", "app", "tread"],
        "start_ts": [start, start + pd.Timedelta(hours=1), start + pd.Timedelta(hours=2)],
        "completed": [True, False, True],
        "minutes": [30.0, 12.5, 45.0],
        "output_kj": [300.0, None, None],
        "landing_date": [DAY] * 3,
    })


def test_bronze_workouts_clean_and_broken():
    spec = BRONZE_SUITES["workouts"]
    ref = {"users": {"u1", "u2"}, "classes": {"c1", "c2", "c3"}}
    assert failed(run_suite(spec, workouts_frame(), reference=ref, previous_row_count=3)) == []

    df = workouts_frame()
    df.loc[1, "minutes"] = 999.0
    df.loc[2, "class_id"] = "c404"
    out = run_suite(spec, df, reference=ref, previous_row_count=3)
    assert failed(out) == ["ranges", "referential_integrity"]
    assert by_name(out)["ranges"].metadata["examples"] == {"minutes": [999.0]}
    assert not by_name(out)["ranges"].blocking  # ingest quarantines these already: warn
    ri = by_name(out)["referential_integrity"]
    assert ri.blocking and ri.metadata["examples"] == {"class_id": ["c404"]}
    assert "bronze_workouts" in ri.description


def test_bronze_compound_key():
    ts = pd.Timestamp(DAY, tz="UTC")
    df = pd.DataFrame({"user_id": ["u1", "u1"], "class_id": ["c1", "c1"],
                       "liked_ts": [ts, ts], "landing_date": [DAY, DAY]})
    out = run_suite(BRONZE_SUITES["music_likes"], df,
                      reference={"users": {"u1"}, "classes": {"c1"}})
    assert failed(out) == ["unique_key"]
    ex = by_name(out)["unique_key"].metadata["examples"]["user_id,class_id,liked_ts"][0]
    assert ex["user_id"] == "u1" and ex["liked_ts"].startswith(DAY.isoformat())


def test_wrong_type_is_a_failed_check_not_a_crash():
    spec = user_features_suite()
    df = user_features_frame()
    df["workouts_7d"] = df["workouts_7d"].astype(str)
    o = by_name(run_suite(spec, df))["ranges"]
    assert not o.passed and "workouts_7d" in o.description


def test_empty_frame():
    out = run_suite(training_examples_suite(R), training_frame().iloc[:0],
                      reference=REFERENCE, previous_row_count=N)
    assert failed(out) == ["positive_ratio", "row_volume_vs_previous"]
    assert "empty table" in by_name(out)["positive_ratio"].description


def test_a_gx_crash_becomes_failed_checks(te_suite, monkeypatch):
    gx, _ = quality_engine._gx()

    class Broken:
        def get_batch(self, **kwargs):
            raise RuntimeError("boom")

    monkeypatch.setattr(quality_engine, "_gx", lambda: (gx, Broken()))
    out = run_suite(te_suite, training_frame(), reference=REFERENCE)
    assert failed(out) == sorted(set(te_suite.check_names) - {"row_volume_vs_previous"})
    assert all("RuntimeError: boom" in o.description for o in out if not o.passed)


# ---------------------------------------------------------------- speed (reported, not asserted)

@pytest.mark.slow
def test_one_million_rows_validate_in_seconds(te_suite, capsys):
    n = 1_000_000
    rng = np.random.default_rng(7)
    users = np.array([f"u{k}" for k in range(50_000)])
    classes = np.array([f"c{k}" for k in range(5_000)])
    df = pd.DataFrame({
        "example_id": [f"e{k}" for k in range(n)],
        "user_id": users[rng.integers(0, len(users), n)],
        "class_id": classes[rng.integers(0, len(classes), n)],
        "platform": np.array(["bike", "tread", "app"])[rng.integers(0, 3, n)],
        "hour_of_day": rng.integers(0, 24, n),
        "day_of_week": rng.integers(1, 8, n),
        "label_take": (rng.random(n) < 0.2).astype("int64"),
    })
    warm_up()
    t0 = time.perf_counter()
    out = run_suite(te_suite, df, reference={"users": set(users), "classes": set(classes)},
                      previous_row_count=n)
    elapsed = time.perf_counter() - t0
    assert failed(out) == []
    with capsys.disabled():
        print(f"\n[quality] training_examples suite, {n:,} rows, "
              f"{len(te_suite.checks)} checks: {elapsed:.2f} s")
