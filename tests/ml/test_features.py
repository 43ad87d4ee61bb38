"""ml.features: spec, vocabularies (OOV), normalization round trip, bad input, context ablation."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest
import torch

from ml.features import (
    MULTI_VALUE_SEPARATOR,
    CONTEXT_FEATURES,
    Encoders,
    FeatureError,
    FeatureSpec,
    default_spec,
    prepare,
    with_added,
    with_context,
    without,
)


def frame(n: int = 6, **overrides) -> pl.DataFrame:
    """A small joined frame (the shape read_examples returns) with the default spec's inputs."""
    disc = ["cycling", "yoga", "cycling", "running", "cycling", "yoga"][:n]
    base = {
        "example_id": [f"w{i}:0" for i in range(n)],
        "event_date": [dt.date(2025, 3, 2)] * n,
        "user_id": [f"u{i % 3}" for i in range(n)],
        "class_id": [f"c{i}" for i in range(n)],
        "platform": ["bike", "app", "bike", "tread", "bike", "app"][:n],
        "hour_of_day": [7, 8, 7, 19, 22, 6][:n],
        "day_of_week": [1, 2, 3, 4, 5, 6][:n],
        "is_weekend": [False] * (n - 1) + [True],
        "prev_discipline": [None, "yoga", None, None, "cycling", None][:n],
        "prev_body_focus": [None, "mind", None, None, "lower", None][:n],
        "prev_duration_min": [None, 10.0, None, None, 20.0, None][:n],
        "minutes_since_prev": [None, 5.0, None, None, 1.0, None][:n],
        "position_in_session": [1, 2, 1, 1, 2, 1][:n],
        "label_take": [1, 0, 1, 0, 1, 0][:n], "label_complete": [1, 0, 0, 0, 1, 0][:n],
        "label_music_like": [0, 0, 1, 0, 0, 0][:n],
        # user side (row 3: a cold-start user, all null)
        "fitness_level": ["beginner", "advanced", "beginner", None, "beginner", "intermediate"][:n],
        "gender": ["f", "m", "f", None, "f", None][:n],
        "country": ["US", "DE", "US", None, "US", "US"][:n],
        "owns_bike": [True, False, True, None, True, False][:n],
        "owns_tread": [False] * n,
        "days_since_signup": [10, 300, 10, None, 10, 50][:n],
        "workouts_total": [5, 200, 5, None, 5, 0][:n],
        "workouts_7d": [1, 3, 1, None, 1, 0][:n], "workouts_28d": [2, 10, 2, None, 2, 0][:n],
        "minutes_7d": [20.0, 90, 20, None, 20, 0][:n], "minutes_28d": [40.0, 300, 40, None, 40, 0][:n],
        "completion_rate_28d": [0.8, 0.9, 0.8, None, 0.8, 0.7][:n],
        "days_since_last_workout": [1, 2, 1, None, 1, None][:n],
        "last_discipline": ["cycling", "yoga", "cycling", None, "cycling", None][:n],
        "last_body_focus": ["lower", "mind", "lower", None, "lower", None][:n],
        "last_duration_min": [20, 10, 20, None, 20, None][:n],
        "last_platform": ["bike", "app", "bike", None, "bike", None][:n],
        "last_instructor_id": ["i1", "i2", "i1", None, "i1", None][:n],
        "top_instructor_id": ["i1", "i2", "i1", None, "i2", None][:n],
        "top_instructor_share": [0.5, 0.4, 0.5, None, 0.5, None][:n],
        "top_discipline": ["cycling", "yoga", "cycling", None, "cycling", None][:n],
        **{f"share_{d}": [1.0 if d == "cycling" else 0.0] * 3 + [None] + [0.5 if d in ("cycling", "yoga") else 0.0] * 2
           for d in ("cycling", "running", "walking", "strength", "yoga", "stretching",
                     "meditation", "cardio", "pilates")},
        "usual_hour_bike": [7.0, None, 7.0, None, 23.0, None][:n],
        "usual_hour_tread": [None] * n, "usual_hour_app": [None, 9.0, None, None, None, None][:n],
        "session_minutes_weekday": [30.0, 20, 30, None, 30, None][:n],
        "session_minutes_weekend": [None, 20.0, None, None, None, None][:n],
        "music_likes_total": [1, 5, 1, None, 1, 0][:n], "music_likes_28d": [1, 2, 1, None, 1, 0][:n],
        "bookmarks_total": [0, 3, 0, None, 0, 0][:n], "bookmarks_28d": [0, 1, 0, None, 0, 0][:n],
        # class side (row 5: a class released on the event day: popularity null)
        "instructor_id": ["i1", "i2", "i3", "i1", "i1", "i2"][:n],
        "discipline": disc,
        "equipment": ["bike", "none", "bike", "tread", "bike", "none"][:n],
        "duration_min": [20, 10, 30, 45, 20, 10][:n],
        "difficulty": [5.0, 2.0, 7.0, 6.0, 5.0, 1.0][:n],
        "body_focus": ["lower", "mind", "lower", "lower", "lower", "mind"][:n],
        "music_genre": ["pop", "ambient", "rock", "pop", "pop", "ambient"][:n],
        "release_date": [dt.date(2025, 1, 1)] * (n - 1) + [dt.date(2025, 3, 2)],
        **{f"class_{c}": [v * (i + 1) for i in range(n - 1)] + [None]
           for c, v in (("workouts_1d", 1), ("workouts_7d", 2), ("workouts_28d", 3),
                        ("workouts_total", 4), ("bookmarks_7d", 1), ("impressions_7d", 10))},
        **{f"class_{c}": [0.1 * (i + 1) for i in range(n - 1)] + [None]
           for c in ("completion_rate", "music_like_rate", "take_rate_7d")},
    }
    base.update(overrides)
    return pl.DataFrame(base, strict=False)


def test_default_spec_has_no_ids_and_names_context():
    spec = default_spec()
    assert "user_id" not in spec.sparse and "class_id" not in spec.sparse
    assert {"user_id", "class_id"} <= set(default_spec(include_ids=True).sparse)
    assert len(set(spec.sparse)) == len(spec.sparse) and len(set(spec.dense)) == len(spec.dense)
    for cross in ("user_share_of_class_discipline", "is_top_instructor", "is_last_instructor"):
        assert cross in spec.dense
    assert spec.context_features == set(CONTEXT_FEATURES)


def test_a_feature_ablation_drops_the_named_features_and_refuses_unknown_names():
    spec = default_spec(include_ids=True)
    off = without(spec, ["class_id", "class_workouts_*"])
    gone = (set(spec.sparse) | set(spec.dense)) - (set(off.sparse) | set(off.dense))
    assert gone == {"class_id"} | {c for c in spec.dense if c.startswith("class_workouts_")}
    assert len(gone) > 2 and "user_id" in off.sparse
    assert without(spec, []) is spec
    with pytest.raises(FeatureError, match=r"drop_features: \['clas_id'\] match no feature"):
        without(spec, ["clas_id"])


def test_added_features_are_the_numeric_user_columns_named_and_unknown_names_are_refused():
    spec = default_spec()
    schema = {"user_id": pl.Utf8, "user_emb_00": pl.Float32, "user_emb_01": pl.Float32,
              "coach_score": pl.Int64, "nickname": pl.Utf8, "workouts_7d": pl.Int64}
    added = with_added(spec, ["user_emb_*", "coach_score"], schema)
    assert added.dense == [*spec.dense, "user_emb_00", "user_emb_01", "coach_score"]
    assert added.sparse == spec.sparse and with_added(spec, [], schema) is spec
    # a frame with the columns encodes them; one without is refused naming the column
    f = frame().with_columns(pl.Series("user_emb_00", [0.1, -0.2, 0.3, 0.0, 0.5, None]),
                             pl.lit(1.0).alias("user_emb_01"), pl.lit(3).alias("coach_score"))
    b = Encoders.fit(f, added).transform(f)
    assert b.dense.shape[1] == len(added.dense) and torch.isfinite(b.dense).all()
    with pytest.raises(FeatureError, match="user_emb_00"):
        Encoders.fit(frame(), added)
    # text columns, features the spec has and names matching nothing are refused
    for bad in (["nickname"], ["workouts_7d"], ["user_emb"]):
        with pytest.raises(FeatureError, match=r"add_features: .* match no numeric column of gold "
                                               r"user_features_daily .*\['user_emb_00'"):
            with_added(spec, bad, schema)


def test_context_ablation_drops_exactly_the_context_features():
    spec = default_spec()
    off = with_context(spec, False)
    assert with_context(spec, True) is spec
    dropped = (set(spec.sparse) | set(spec.dense)) - (set(off.sparse) | set(off.dense))
    assert dropped == (set(spec.sparse) | set(spec.dense)) & CONTEXT_FEATURES
    assert {"platform", "hour_of_day", "day_of_week", "is_weekend", "prev_discipline",
            "prev_body_focus", "minutes_since_prev", "position_in_session"} <= dropped
    # the rest keeps its order
    assert off.sparse == [c for c in spec.sparse if c not in CONTEXT_FEATURES]
    assert off.dense == [c for c in spec.dense if c not in CONTEXT_FEATURES]
    enc = Encoders.fit(frame(), off)
    b = enc.transform(frame())
    assert b.sparse.shape[1] == len(off.sparse) and b.dense.shape[1] == len(off.dense)


def test_cross_features():
    f = prepare(frame())
    assert f["user_share_of_class_discipline"].to_list()[:3] == [1.0, 0.0, 1.0]
    assert f["user_share_of_class_discipline"][3] is None  # cold user: filled with 0 later
    assert f["is_top_instructor"].to_list() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert f["is_last_instructor"].to_list() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert f["user_is_cold"].to_list() == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert f["class_is_new"].to_list() == [0.0] * 5 + [1.0]
    assert f["class_age_days"].to_list()[-1] == 0.0
    # circular hour distance: 22h vs usual 23h on the bike = 1; 7 vs 7 = 0; null when never there
    assert f["hour_gap_usual"].to_list()[:5] == [0.0, 1.0, 0.0, None, 1.0]


def test_vocab_and_out_of_vocabulary():
    spec = FeatureSpec(sparse=["country", "discipline"], dense=["difficulty"])
    enc = Encoders.fit(frame(), spec)
    assert enc.vocab["country"] == ["US", "DE"]  # most frequent first, null not in vocab
    assert enc.cardinalities() == [3, 4]
    new = frame(country=["FR", "US", None, "DE", "US", "US"])
    ids = enc.transform(new).sparse[:, 0].tolist()
    assert ids == [0, 1, 0, 2, 1, 1]  # unseen and null -> 0
    capped = Encoders.fit(frame(), spec, max_vocab=1)
    assert capped.vocab["discipline"] == ["cycling"] and capped.cardinalities() == [2, 2]
    rare = Encoders.fit(frame(), spec, min_count=2)
    assert rare.vocab["discipline"] == ["cycling", "yoga"]


def test_an_integer_column_gets_the_ids_of_its_string_form():
    """hour_of_day read as integers (training) or as strings (a frame built by hand): the same
    ids, unseen and null ones included; a vocabulary entry that no integer writes ("07", "x")
    is never matched by one."""
    spec = FeatureSpec(sparse=["hour_of_day", "day_of_week"], dense=["difficulty"])
    enc = Encoders.fit(frame(hour_of_day=[7, 8, 7, 19, -3, 6]), spec)
    enc.vocab["day_of_week"] += ["07", "x"]  # the fit never writes these from integers
    ints = frame(hour_of_day=[7, 99, None, -3, 19, 6], day_of_week=[7, 1, None, 2, 0, 6])
    strings = ints.with_columns(pl.col("hour_of_day", "day_of_week").cast(pl.Utf8))
    got, want = enc.transform(ints).sparse, enc.transform(strings).sparse
    assert torch.equal(got, want)
    assert got[:, 0].tolist() == [1, 0, 0, enc.vocab["hour_of_day"].index("-3") + 1,
                                  enc.vocab["hour_of_day"].index("19") + 1, enc.vocab["hour_of_day"].index("6") + 1]
    assert got[0, 1] == 0 and got[2, 1] == 0  # 7 is not "07"; null is 0
    empty = Encoders.fit(frame(), FeatureSpec(sparse=["hour_of_day"], dense=[]), min_count=99)
    assert empty.transform(ints).sparse[:, 0].tolist() == [0] * 6


def test_normalization_and_json_round_trip(tmp_path):
    spec = default_spec()
    enc = Encoders.fit(frame(), spec)
    b = enc.transform(frame())
    assert b.dense.shape == (6, len(spec.dense)) and b.sparse.shape == (6, len(spec.sparse))
    assert torch.isfinite(b.dense).all()
    # a fully observed column is standardized on the training frame
    j = spec.dense.index("difficulty")
    assert abs(float(b.dense[:, j].mean())) < 1e-5 and abs(float(b.dense[:, j].std(unbiased=False)) - 1) < 1e-4
    # log1p declared columns: the stored mean is that of log1p(x) (nulls filled with 0 first)
    w = [5, 200, 5, 0, 5, 0]
    assert enc.mean["workouts_total"] == pytest.approx(sum(math.log1p(x) for x in w) / 6)
    assert b.labels.tolist()[0] == [1.0, 1.0, 0.0] and b.labels.dtype == torch.float32

    again = Encoders.from_json(enc.to_json())
    assert again.spec == enc.spec and again.vocab == enc.vocab
    assert again.mean == enc.mean and again.std == enc.std
    b2 = again.transform(frame())
    assert torch.equal(b.dense, b2.dense) and torch.equal(b.sparse, b2.sparse)
    enc.save(tmp_path / "enc.json")
    assert Encoders.load(tmp_path / "enc.json").cardinalities() == enc.cardinalities()


def test_transform_without_labels_gives_zero_labels():
    enc = Encoders.fit(frame(), default_spec())
    b = enc.transform(frame().drop("label_take", "label_complete", "label_music_like"))
    assert b.labels.shape == (6, 3) and float(b.labels.abs().sum()) == 0.0


@pytest.mark.parametrize("column", ["completion_rate_28d", "workouts_total"])  # the second: log1p
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_names_the_column_and_a_row(bad, column):
    spec = default_spec()
    assert ("workouts_total" in spec.log1p) and ("completion_rate_28d" not in spec.log1p)
    values = [0.8, 0.9, bad, None, 0.8, 0.7]
    with pytest.raises(FeatureError, match=rf"{column}.*example_id='w2:0'"):
        Encoders.fit(frame(**{column: values}), spec)
    enc = Encoders.fit(frame(), spec)
    with pytest.raises(FeatureError, match=rf"dense column '{column}'.*NaN or infinite.*example_id='w2:0'"):
        enc.transform(frame(**{column: values}))


def test_encoding_in_one_select_matches_the_fit_path_and_names_bad_columns():
    from ml.features import _dense_checked, _dense_exprs

    spec = default_spec()
    enc = Encoders.fit(frame(), spec)
    f = frame(workouts_total=[5, 200, None, 0, 5, 0])
    expected = (_dense_checked(enc.with_cooccurrence(prepare(f)), spec, None).select(_dense_exprs(spec, enc.mean, enc.std))
                .to_numpy())
    assert torch.equal(enc.transform(f).dense, torch.from_numpy(expected))
    with pytest.raises(FeatureError, match=r"dense columns \['completion_rate_28d'\] overflow float32"):
        enc.transform(frame(completion_rate_28d=[0.8, 0.9, 1e300, None, 0.8, 0.7]))
    with pytest.raises(FeatureError, match=r"dense column 'completion_rate_28d' is not numeric"):
        enc.transform(frame(completion_rate_28d=["a", "b", "c", None, "d", "e"]))
    # pickled (to Ray workers) without the built expressions, and rebuilt there
    import pickle

    again = pickle.loads(pickle.dumps(enc))
    assert "_encoding" not in pickle.loads(pickle.dumps(enc)).__dict__
    assert torch.equal(again.transform(f).dense, enc.transform(f).dense)


def test_null_is_allowed_and_imputed():
    spec = FeatureSpec(sparse=["country"], dense=["completion_rate_28d"])
    enc = Encoders.fit(frame(), spec)
    b = enc.transform(frame(completion_rate_28d=[None] * 6))
    assert float(b.dense.abs().sum()) == 0.0  # the mean, normalized


def test_empty_frame_and_missing_columns_raise():
    spec = default_spec()
    with pytest.raises(FeatureError, match="no rows from gold/training_examples"):
        Encoders.fit(frame().head(0), spec, table="gold/training_examples")
    enc = Encoders.fit(frame(), spec)
    with pytest.raises(FeatureError, match="no rows"):
        enc.transform(frame().head(0))
    with pytest.raises(FeatureError, match="difficulty"):
        enc.transform(frame().drop("difficulty"))


def test_a_multi_valued_column_becomes_a_bag_of_its_values(tmp_path):
    """Values joined by the unit separator: the vocabulary is of single values, the spec gets a
    bag as wide as the widest row, and each row holds its values' ids (-1 in unused slots; a
    null row the out-of-vocabulary id 0, like a single feature)."""
    sep = MULTI_VALUE_SEPARATOR
    frame = pl.DataFrame({
        "item_attr_genre": [f"drama{sep}comedy", "drama", None, f"comedy{sep}drama{sep}noir"],
        "item_attr_year": ["1995", "1996", "1995", None],
        "events_total": [1.0, 2.0, 3.0, 4.0],
    })
    spec = FeatureSpec(sparse=["item_attr_genre", "item_attr_year"], dense=["events_total"],
                       dataset="mapped")
    enc = Encoders.fit(frame, spec)
    assert enc.spec.bags == {"item_attr_genre": 3} and enc.spec.slots() == [3, 1]
    assert enc.vocab["item_attr_genre"] == ["drama", "comedy", "noir"]  # most frequent first
    batch = enc.transform(frame.vstack(pl.DataFrame({"item_attr_genre": [f"western{sep}drama"],
                                                     "item_attr_year": ["1995"],
                                                     "events_total": [5.0]})))
    assert batch.sparse.tolist() == [
        [1, 2, -1, 1], [1, -1, -1, 2], [0, -1, -1, 1], [2, 1, 3, 0],
        [0, 1, -1, 1],  # an unknown value: the out-of-vocabulary id, in its slot
    ]
    again = Encoders.from_json(enc.to_json())
    assert again.spec.bags == {"item_attr_genre": 3}
    assert torch.equal(again.transform(frame).sparse, enc.transform(frame).sparse)
    # a dropped bag feature leaves no bag behind
    assert without(enc.spec, ["item_attr_genre"]).bags == {}
