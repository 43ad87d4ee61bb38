"""Items carry the catalogue's card fields (title, instructor, ...), in the cache and the API."""

from __future__ import annotations


import orjson
import polars as pl
import pytest

from homefeed.cache import CacheError, CacheReader, CacheStore
from homefeed.payload import NEW_DAYS
from homefeed.synthetic import synthetic_classes
from tests.homefeed.data import SERVE_DATE


def _items(store: CacheStore) -> list[dict]:
    reader = CacheReader(store.root, refresh_s=0)
    out = []
    for key_platform in ("bike", "app"):
        for user in ("u0000000", "u0000003"):
            out += [i for r in orjson.loads(reader.get(user, key_platform))["rows"] for i in r["items"]]
    out += [i for r in orjson.loads(reader.popular("tread"))["rows"] for i in r["items"]]
    reader.close()
    return out


def test_items_carry_the_catalogue_fields_and_is_new(tmp_path, make_frames, popular):
    classes = synthetic_classes(serve_date=SERVE_DATE)
    gone = set(classes["class_id"].sample(200, seed=3).to_list())  # classes the catalogue lost
    kept = classes.filter(~pl.col("class_id").is_in(gone))
    store = CacheStore(tmp_path)
    store.publish(iter(make_frames()), popular, serve_date=SERVE_DATE, model_version=1, classes=kept)
    by_id = {r["class_id"]: r for r in classes.iter_rows(named=True)}
    items = _items(store)
    assert items and {"title", "instructor", "discipline", "duration_min", "is_new"} <= set(items[0])
    checked_new = checked_gone = 0
    for it in items:
        c = by_id[it["class_id"]]
        if it["class_id"] in gone:  # shown by its id, every field null, never dropped
            assert (it["title"], it["instructor"], it["is_new"]) == (None, None, None)
            checked_gone += 1
            continue
        assert (it["title"], it["instructor"], it["discipline"], it["duration_min"]) == \
            (c["title"], c["instructor"], c["discipline"], c["duration_min"])
        age = (SERVE_DATE - c["release_date"]).days
        assert it["is_new"] is (0 <= age < NEW_DAYS)
        checked_new += it["is_new"]
    assert checked_new and checked_gone, (checked_new, checked_gone)


def test_a_catalogue_with_fewer_fields_gives_fewer_fields(tmp_path, make_frames, popular):
    """A mapped dataset's catalogue may have nothing but release dates: no crash, no made-up title."""
    classes = synthetic_classes(serve_date=SERVE_DATE).select("class_id", "release_date")
    store = CacheStore(tmp_path)
    store.publish(iter(make_frames()), popular, serve_date=SERVE_DATE, model_version=1, classes=classes)
    assert all(set(it) == {"rank", "class_id", "score", "is_new"} for it in _items(store))


@pytest.mark.parametrize("bad, message", [
    (lambda c: pl.concat([c, c.head(1)]), "'class_id' is duplicated at row 0"),
    (lambda c: c.drop("class_id"), "no class_id column"),
])
def test_an_ambiguous_catalogue_is_refused(tmp_path, make_frames, popular, bad, message):
    store = CacheStore(tmp_path)
    with pytest.raises(CacheError, match=message):
        store.publish(iter(make_frames()), popular, serve_date=SERVE_DATE, model_version=1,
                      classes=bad(synthetic_classes()))
    assert store.current() is None


def test_a_popular_count_is_refused_as_a_score(tmp_path, make_frames, popular):
    counts = popular.with_columns((pl.col("score") * 900).cast(pl.Float32))
    store = CacheStore(tmp_path)
    with pytest.raises(CacheError, match=r"popular: column 'score' must be a share in \[0, 1\]"):
        store.publish(iter(make_frames()), counts, serve_date=SERVE_DATE, model_version=1)
    assert store.current() is None
