"""The preview in a real headless browser (Debian's Chromium, driven by selenium): the rendered
rows are the cache's, card by card, and a screenshot is kept as a test artifact under
tests/artifacts/ (git-ignored). `make test-extra` installs Chromium when it is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from homefeed.cache import CacheReader
from tests.homefeed.preview_site import GONE, preview_site

pytestmark = pytest.mark.extra
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# no network on this machine, and nothing of the user's: a fresh profile, no background calls
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium: pip install -e '.[dev]'")
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        pytest.skip(f"no {CHROMIUM} / {DRIVER}: apt-get install chromium chromium-driver (make test-extra does)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_rendered_rows_are_the_cache_and_a_screenshot_is_kept(browser, tmp_path):
    from selenium.webdriver.common.by import By

    root = tmp_path / "cache"
    with preview_site(root) as (base, _):
        browser.get(f"{base}/?user=u0000000")
        reader = CacheReader(root, refresh_s=0)
        screens = browser.find_elements(By.CSS_SELECTOR, "section.screen")
        assert [s.get_attribute("data-platform") for s in screens] == ["app", "bike"]
        for screen in screens:
            rows = orjson.loads(reader.get("u0000000", screen.get_attribute("data-platform")))["rows"]
            shown = screen.find_elements(By.CSS_SELECTOR, "div.row")
            assert [r.find_element(By.TAG_NAME, "h3").text for r in shown] == [r["title"] for r in rows]
            for row_el, row in zip(shown, rows):
                cards = row_el.find_elements(By.CSS_SELECTOR, "div.card")
                assert [c.get_attribute("data-class-id") for c in cards] == [i["class_id"] for i in row["items"]]
                for card_el, item in zip(cards, row["items"]):  # what a person sees on the card
                    title = card_el.find_element(By.CSS_SELECTOR, ".title").text
                    assert title == (item["title"] or item["class_id"])
                    if item["title"] is not None:
                        assert item["instructor"] in card_el.text
        lost = browser.find_element(By.CSS_SELECTOR, f'div.card[data-class-id="{GONE}"]')
        assert "not in catalogue" in lost.text and lost.is_displayed()
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "preview_u0000000.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        browser.find_element(By.ID, "flip").click()  # the reviewer flips the model
        assert "popularity" in browser.find_element(By.ID, "model").text
        browser.get(f"{base}/?user=nobody")
        assert "popular rows" in browser.find_element(By.ID, "unknown-user").text
        reader.close()
