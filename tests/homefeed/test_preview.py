"""The home-screen preview page (homefeed.preview) over HTTP, without a browser: the cards are
the cache's, an unknown user gets the popular rows and is told, a class the catalogue lost is
marked, the reviewer can flip models, and the page only reads."""

from __future__ import annotations

import re

import orjson
import pytest

from homefeed.cache import CacheReader
from tests.homefeed.preview_site import GONE, preview_site
from tests.homefeed.test_service import call


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with preview_site(root) as (base, version):
        yield base, root, version


def _cards(page: str, platform: str) -> list[str]:
    section = re.search(rf'<section class="screen" data-platform="{platform}".*?</section>', page, re.S).group(0)
    return re.findall(r'data-class-id="([^"]+)"', section)


def test_the_champion_screen_is_the_cache_and_the_side_shows_history_and_truth(site):
    base, root, _ = site
    status, _, body = call(f"{base}/?user=u0000000")
    page = body.decode()
    assert status == 200 and 'id="unknown-user"' not in page
    reader = CacheReader(root, refresh_s=0)
    for platform in ("bike", "app"):
        rows = orjson.loads(reader.get("u0000000", platform))["rows"]
        assert _cards(page, platform) == [i["class_id"] for r in rows for i in r["items"]]
    assert 'data-platform="tread"' not in page  # no rows there: no screen
    assert "30 min Pop Ride" in page and "Leanne Lee" in page and "cycling, yoga" in page
    # the lost class: its id and the mark; the others: their titles
    gone = re.search(rf'data-class-id="{GONE}".*?</div></div>', page, re.S).group(0)
    assert f'class="title">{GONE}<' in gone
    assert "not in catalogue" in page and page.count("not in catalogue") == 1
    reader.close()


def test_an_unknown_user_gets_the_popular_rows_and_is_told(site):
    base, root, _ = site
    page = call(f"{base}/?user=nobody-42")[2].decode()
    assert 'id="unknown-user"' in page and "popular rows" in page
    reader = CacheReader(root, refresh_s=0)
    popular = orjson.loads(reader.popular("tread"))["rows"][0]["items"]
    assert _cards(page, "tread") == [i["class_id"] for i in popular]
    reader.close()


def test_the_reviewer_flips_to_the_challenger(site):
    base, root, _ = site
    page = call(f"{base}/?user=u0000000")[2].decode()
    flip = re.search(r'id="flip" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    other = call(f"{base}/{flip}")[2].decode()
    assert "popularity" in re.search(r'id="model">([^<]+)<', other).group(1)
    reader = CacheReader(root, refresh_s=0)
    assert _cards(other, "bike") == [i["class_id"] for i in orjson.loads(reader.popular("bike"))["rows"][0]["items"]]
    reader.close()


@pytest.mark.parametrize("url, status", [
    ("/?user=u0000000&model=best", 400), ("/?user=a%20b", 400), ("/nothing", 404)])
def test_bad_input_is_a_clear_error(site, url, status):
    base, _, _ = site
    assert call(base + url)[0] == status


def test_the_preview_only_reads(site):
    base, root, version = site
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert call(f"{base}/?user=u0000000", method="POST")[0] == 405
    call(f"{base}/")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
