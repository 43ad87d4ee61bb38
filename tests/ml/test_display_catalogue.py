"""What a home-screen card shows of a class, per dataset (`Dataset.display_catalogue`)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml.datasets import FITNESS, MAPPED
from ml.gold import GoldStore


def test_fitness_cards_take_the_latest_landing_and_the_instructor_name(tmp_path):
    utc = pl.Datetime("us", "UTC")
    pl.DataFrame({
        "class_id": ["c1", "c1", "c2"], "title": ["old title", "30 min Pop Ride", "10 min Calm"],
        "instructor_id": ["i1", "i1", "i9"], "discipline": ["cycling", "cycling", "meditation"],
        "duration_min": [30, 30, 10],
        "release_ts": pl.Series([dt.datetime(2026, 10, 1, 5)] * 3).cast(utc),
        "landing_date": [dt.date(2026, 10, 1), dt.date(2026, 10, 2), dt.date(2026, 10, 1)],
    }).write_delta(str(tmp_path / "bronze" / "classes"))
    pl.DataFrame({"instructor_id": ["i1"], "name": ["Leanne Lee"],
                  "landing_date": [dt.date(2026, 10, 1)]}).write_delta(str(tmp_path / "bronze" / "instructors"))
    cards = FITNESS.display_catalogue(GoldStore(str(tmp_path))).sort("class_id")
    assert cards.rows() == [
        ("c1", "30 min Pop Ride", "Leanne Lee", "cycling", 30, dt.date(2026, 10, 1)),
        ("c2", "10 min Calm", "i9", "meditation", 10, dt.date(2026, 10, 1)),  # no name: the id
    ]


def test_mapped_cards_take_item_attributes_named_like_card_fields(tmp_path):
    pl.DataFrame({
        "class_id": ["t1", "t1", "t2"], "feature_date": [dt.date(2026, 9, 1), dt.date(2026, 9, 2)] + [dt.date(2026, 9, 2)],
        "release_date": [dt.date(2026, 8, 1)] * 3, "item_attr_title": ["Old", "Song", None],
        "item_attr_discipline": [["rock", "indie"], ["rock", "indie"], ["jazz"]], "item_attr_artist": ["A", "A", "B"],
    }).write_delta(str(tmp_path / "gold" / "class_features_daily"))
    cards = MAPPED.display_catalogue(GoldStore(str(tmp_path))).sort("class_id")
    assert cards.columns == ["class_id", "title", "discipline", "release_date"]
    assert cards.rows() == [("t1", "Song", "rock, indie", dt.date(2026, 8, 1)),
                            ("t2", None, "jazz", dt.date(2026, 8, 1))]
