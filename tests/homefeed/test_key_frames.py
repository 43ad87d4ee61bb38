"""`key_frames`: the day's recommendation rows cut into frames of whole users, in user order."""

from __future__ import annotations

import polars as pl
import pytest

from homefeed.cache import CacheError, CacheStore
from homefeed.payload import key_frames
from tests.homefeed.data import SERVE_DATE


@pytest.fixture
def day_rows(make_frames, tmp_path) -> pl.LazyFrame:
    """40 users' rows in random order, read back from Parquet row groups as the asset reads Delta."""
    rows = pl.concat(make_frames(40, k=3)).sample(fraction=1.0, shuffle=True, seed=3)
    path = tmp_path / "rows.parquet"
    rows.write_parquet(path, row_group_size=50)
    return pl.scan_parquet(path)


def test_frames_hold_whole_users_in_order_and_every_row_once(day_rows):
    per_user = day_rows.group_by("user_id").agg(pl.len()).collect()["len"].max()
    frames = list(key_frames(day_rows, rows_per_frame=100))
    assert len(frames) > 3
    users = [set(f["user_id"]) for f in frames]
    for a, b in zip(frames, frames[1:]):
        assert a["user_id"].max() < b["user_id"].min()  # ranges, ascending
    assert sum(len(u) for u in users) == len(set().union(*users))  # no user in two frames
    assert all(f.height <= 100 + per_user for f in frames)
    for f in frames:  # sorted by key and rank within a frame
        assert f.equals(f.sort("user_id", "platform", "row_rank", "rank"))
    key = ["user_id", "platform", "row_rank", "rank"]
    assert pl.concat(frames).equals(day_rows.sort(key).collect())


def test_one_frame_when_the_day_fits(day_rows):
    frames = list(key_frames(day_rows))
    assert len(frames) == 1 and frames[0].height == day_rows.select(pl.len()).collect().item()


def test_a_null_user_id_reaches_validation_not_dropped(day_rows, popular, tmp_path):
    bad = pl.concat([day_rows.collect(), day_rows.head(1).collect().with_columns(
        pl.lit(None, dtype=pl.String).alias("user_id"))])
    frames = list(key_frames(bad.lazy(), rows_per_frame=100))
    assert sum(f.height for f in frames) == bad.height
    assert frames[0]["user_id"].null_count() == 1
    with pytest.raises(CacheError, match="user_id"):
        CacheStore(tmp_path / "cache").publish(iter(frames), popular, serve_date=SERVE_DATE,
                                               model_version=1)
    assert CacheStore(tmp_path / "cache").current() is None  # nothing published
