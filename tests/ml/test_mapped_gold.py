"""A "mapped" dataset's gold tables (contract sections 3 and 4): the spec, the encoders, the
reader, on the tiny lakehouses of `tests/ml/tiny_mapped_gold.py`."""


from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from ml.features import (
    CLASS_PREFIX,
    Encoders,
    FeatureSpec,
    default_spec,
    mapped_spec,
    pair_feature,
    prepare,
    with_context,
)
from ml.datasets import MAPPED
from ml.examples import read_examples
from ml.gold import GoldStore
from tests.ml.tiny_mapped_gold import DAYS, _usual_hour, build_mapped_lakehouse, genres

@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    return build_mapped_lakehouse(tmp_path_factory.mktemp("mapped"), "rich")


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    return build_mapped_lakehouse(tmp_path_factory.mktemp("mapped"), "bare")


# ---------------------------------------------------------------------------------------------
# the spec


def test_rich_spec_has_context_attributes_and_both_sides(rich):
    uri, _ = rich
    spec = GoldStore(uri).mapped_spec()
    assert spec.dataset == "mapped"
    assert spec.sparse == ["last_platform", "last_ctx_network", "user_attr_country",
                           "item_attr_genre", "platform", "hour_of_day", "day_of_week", "ctx_network"]
    assert spec.dense == [
        "events_total", "events_7d", "events_28d", "music_likes_28d", "complete_rate_28d",
        "days_since_first_seen", "user_is_cold", "days_since_last_event", "never_active",
        "last_ctx_battery", "user_attr_age",
        "class_events_1d", "class_events_7d", "class_events_28d", "class_events_total",
        "class_complete_rate", "class_music_like_rate", "class_age_days", "class_is_new",
        "item_attr_duration_s", "user_share_of_item_attr_genre", "recent_item_cooccurrence",
        "is_weekend", "hour_gap_usual", "ctx_battery",
    ]
    # the affinity to the item's genre: a pair feature read from gold user_attribute_affinity
    assert pair_feature("user_share_of_item_attr_genre") == ("lookup", "share", "item_attr_genre")
    assert spec.fill_null["user_share_of_item_attr_genre"] == 0.0
    # the similarity to the recent items (last_item_id*), ids themselves only with include_ids
    assert pair_feature("recent_item_cooccurrence")[0] == "cooc"
    assert spec.fill_null["recent_item_cooccurrence"] == 0.0
    assert spec.context_features == {"platform", "hour_of_day", "day_of_week", "is_weekend",
                                     "hour_gap_usual", "ctx_network", "ctx_battery"}
    assert {"events_total", "class_events_total", "class_age_days"} <= spec.log1p
    assert spec.fill_null["days_since_last_event"] == 3650.0
    # nothing of the fitness spec leaks in
    assert not set(spec.sparse + spec.dense) & {"discipline", "instructor_id", "workouts_total",
                                                "user_instructor_share", "prev_discipline"}


def test_bare_spec_is_time_of_event_context_only(bare):
    uri, _ = bare
    spec = GoldStore(uri).mapped_spec()
    assert spec.sparse == ["last_platform", "platform", "hour_of_day", "day_of_week"]
    assert not [c for c in spec.sparse + spec.dense if "attr_" in c or "ctx_" in c]
    assert spec.context_features == {"platform", "hour_of_day", "day_of_week", "is_weekend",
                                     "hour_gap_usual"}
    ablation = with_context(spec, False)
    assert ablation.dataset == "mapped"
    assert ablation.sparse == ["last_platform"]
    assert "is_weekend" not in ablation.dense and "hour_gap_usual" not in ablation.dense
    assert ablation.dense == [c for c in spec.dense if c not in ("is_weekend", "hour_gap_usual")]


def test_ablation_of_the_rich_spec_drops_every_context_column(rich):
    spec = with_context(GoldStore(rich[0]).mapped_spec(), False)
    assert spec.sparse == ["last_platform", "last_ctx_network", "user_attr_country", "item_attr_genre"]
    assert not {"platform", "hour_of_day", "day_of_week", "is_weekend", "hour_gap_usual",
                "ctx_network", "ctx_battery"} & set(spec.sparse + spec.dense)
    # the user's last context is the user's state, not the moment's: it stays
    assert "last_ctx_battery" in spec.dense


def test_mapped_spec_from_plain_column_types():
    spec = mapped_spec({"events_total": "int64", "last_platform": "string", "user_attr_tier": "string"},
                       {"events_total": "int64", "item_attr_len": "double"},
                       {"platform": "string", "hour_of_day": "int32", "ctx_speed": "float64",
                        "ctx_when": "timestamp[us]"}, include_ids=True)
    assert spec.sparse == ["last_platform", "user_attr_tier", "platform", "hour_of_day"]  # no ids in
    assert spec.dense == ["events_total", "class_events_total", "class_is_new", "item_attr_len",
                          "ctx_speed"]
    assert "ctx_when" in spec.context_features and "ctx_when" not in spec.dense  # not a feature type
    with pytest.raises(TypeError, match="mapping"):
        mapped_spec(["events_total"], {}, {})


def test_dataset_travels_with_the_encoders_and_old_json_is_fitness(rich):
    uri, _ = rich
    frame = read_examples(GoldStore(uri), dataset=MAPPED).collect()
    enc = Encoders.fit(frame, GoldStore(uri).mapped_spec())
    back = Encoders.from_json(enc.to_json())
    assert back.spec.dataset == "mapped" and back.spec == enc.spec
    old = json.loads(enc.to_json())
    del old["spec"]["dataset"]  # a spec saved before datasets existed
    assert Encoders.from_json(json.dumps(old)).spec.dataset == "fitness"
    assert default_spec().dataset == "fitness"
    with pytest.raises(ValueError, match="dataset"):
        FeatureSpec(sparse=[], dense=[], dataset="music")


# ---------------------------------------------------------------------------------------------
# the reader


def test_read_examples_joins_point_in_time(rich):
    uri, log = rich
    df = read_examples(GoldStore(uri), dataset=MAPPED).collect()
    assert df.height == pl.read_delta(f"{uri}/gold/training_examples").height
    pos = df.filter(pl.col("label_take") == 1)
    # a user's features are those of the day before: takes strictly before the event day
    for u, e in (("u03", DAYS[1]), ("u05", DAYS[4]), ("u10", DAYS[5])):
        before = log.user_takes(u, e - dt.timedelta(days=1))
        got = pos.filter((pl.col("user_id") == u) & (pl.col("event_date") == e))
        assert set(got["events_total"]) == {len(before)}
        assert set(got["last_ctx_network"]) == {before[-1]["network"]}
        assert set(got["usual_hour"]) == {_usual_hour(before)}
        # the affinity to the taken item's genres: the mean over them of each one's share of the
        # user's takes before the day
        want = [np.mean([sum(g in genres(t["item"]) for t in before) / len(before) for g in genres(item)])
                for item in got["class_id"]]
        assert got["user_share_of_item_attr_genre"].to_list() == pytest.approx(want)
    # a multi-valued genre reached the examples as its values joined by the unit separator
    assert set(df.filter(pl.col("class_id") == "i04")["item_attr_genre"]) == {"g1\x1fg2"}
    # an item's popularity is of the day before; its static columns are there on any day
    i3 = df.filter((pl.col("class_id") == "i03") & (pl.col("event_date") == DAYS[3]))
    n_before = sum(t["item"] == "i03" and t["event_date"] < DAYS[3] for t in log.takes)
    assert set(i3[CLASS_PREFIX + "events_total"]) == {n_before}
    assert set(i3["item_attr_genre"]) == {"g0"} and set(i3["release_date"]) == {DAYS[0]}
    assert "instructor_id" not in df.columns and "user_instructor_share" not in df.columns


def test_cold_user_and_new_item_are_left_joined(rich):
    uri, _ = rich
    df = read_examples(GoldStore(uri), start=DAYS[2], end=DAYS[3], dataset=MAPPED).collect()
    u11 = df.filter((pl.col("user_id") == "u11") & (pl.col("event_date") == DAYS[3]))
    assert u11.height > 0 and u11["events_total"].null_count() == u11.height  # first seen that day
    new = df.filter((pl.col("class_id") == "i11") & (pl.col("event_date") == DAYS[2]))
    assert new.height >= 1 and new[CLASS_PREFIX + "events_total"].null_count() == new.height
    assert set(new["release_date"]) == {DAYS[2]}  # static, from class_features_daily
    enc = Encoders.fit(df, GoldStore(uri).mapped_spec())
    p = prepare(df)
    assert set(p.filter(pl.col("user_id") == "u11")["user_is_cold"]) >= {1.0}
    assert set(p.filter(pl.col("class_id") == "i11")["class_is_new"]) >= {1.0}
    batch = enc.transform(df)
    assert batch.dense.isfinite().all() and len(batch) == df.height


def test_prepare_derives_the_hour_gap_circularly(rich):
    uri, _ = rich
    df = prepare(read_examples(GoldStore(uri), start=DAYS[5], end=DAYS[5], dataset=MAPPED).collect())
    row = df.filter(pl.col("usual_hour").is_not_null()).row(0, named=True)
    d = abs(row["hour_of_day"] - row["usual_hour"]) % 24
    assert row["hour_gap_usual"] == min(d, 24 - d)
    f = prepare(pl.DataFrame({"hour_of_day": [23, 1, None], "usual_hour": [1, 23, 5]}))
    assert f["hour_gap_usual"].to_list() == [2.0, 2.0, None]


def test_fitness_prepare_is_unchanged_by_the_mapped_derivations():
    f = pl.DataFrame({"days_since_signup": [None, 3], "class_workouts_total": [None, 2],
                      "usual_hour_bike": [7.0, None], "platform": ["bike", "bike"], "hour_of_day": [9, 9]})
    out = prepare(f)
    assert out["user_is_cold"].to_list() == [1.0, 0.0]
    assert out["class_is_new"].to_list() == [1.0, 0.0]
    assert out["hour_gap_usual"].to_list() == [2.0, None]
    assert "never_active" not in out.columns


def test_bare_reader_has_no_ctx_or_attr_columns(bare):
    uri, _ = bare
    df = read_examples(GoldStore(uri), dataset=MAPPED).collect()
    assert not [c for c in df.columns if "attr_" in c or "ctx_" in c]
    assert set(df["platform"]) == {"all"}
    enc = Encoders.fit(df, GoldStore(uri).mapped_spec())
    assert enc.vocab["platform"] == ["all"]  # a constant feature
