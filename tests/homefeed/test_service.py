"""The read service over real HTTP: uvicorn in a thread on a loopback socket, urllib as client
(httpx, which starlette's TestClient needs, is not a dependency)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
import uvicorn

from homefeed.cache import CacheReader, CacheStore
from homefeed.service import create_app
from tests.homefeed.data import SERVE_DATE, expected_rows, payload_rows


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the port is ours before the server starts: no race
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def call(url: str, method: str = "GET") -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One published version and the service on it: (base url, cache dir, version, frames)."""
    from homefeed.synthetic import synthetic_popular, synthetic_recommendations

    root = tmp_path_factory.mktemp("cache")
    frames = list(synthetic_recommendations(30, k=6, seed=5, model_version=4, serve_date=SERVE_DATE))
    v = CacheStore(root).publish(frames, synthetic_popular(k=8, seed=7), serve_date=SERVE_DATE, model_version=4)
    with serving(create_app(root, refresh_s=0, max_k=20)) as base:
        yield base, root, v, frames


def test_known_user_gets_stored_bytes(site):
    base, root, v, frames = site
    status, headers, body = call(f"{base}/users/u0000007/recommendations?platform=bike")
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == CacheReader(root).get("u0000007", "bike")  # passed through untouched
    payload = orjson.loads(body)
    assert payload["source"] == "personal" and payload["cache_version"] == v.name
    assert payload_rows(payload) == expected_rows(frames)[("u0000007", "bike")]
    assert headers["x-cache-version"] == v.name


def test_k_and_row_filters(site):
    base, root, v, frames = site
    full = expected_rows(frames)[("u0000003", "app")]
    _, _, body = call(f"{base}/users/u0000003/recommendations?platform=app&k=2")
    p = orjson.loads(body)
    assert payload_rows(p) == tuple((rid, t, items[:2]) for rid, t, items in full)
    status, _, body = call(f"{base}/users/u0000003/recommendations?platform=app&row=evening")
    assert status == 200 and payload_rows(orjson.loads(body)) == tuple(r for r in full if r[0] == "evening")
    _, _, body = call(f"{base}/users/u0000003/recommendations?platform=app&row=morning&k=1")
    assert payload_rows(orjson.loads(body)) == tuple((r[0], r[1], r[2][:1]) for r in full if r[0] == "morning")


def test_unknown_user_gets_popular_with_their_id(site):
    base, root, v, _ = site
    status, _, body = call(f"{base}/users/new-user_42/recommendations?platform=tread&k=3")
    p = orjson.loads(body)
    assert status == 200
    assert (p["user_id"], p["platform"], p["source"], p["cache_version"]) == ("new-user_42", "tread", "popular", v.name)
    assert [r["row_id"] for r in p["rows"]] == ["popular"] and len(p["rows"][0]["items"]) == 3
    # a row filter does not empty a new user's screen: the popular row stands in for it
    _, _, body = call(f"{base}/users/new-user_42/recommendations?platform=bike&row=for_you")
    p = orjson.loads(body)
    assert p["source"] == "popular" and p["rows"][0]["title"] == "Popular on Bike"
    assert len(p["rows"][0]["items"]) == 8


@pytest.mark.parametrize("path, field", [
    ("/users/u0000001/recommendations", "platform"),
    ("/users/u0000001/recommendations?platform=xbox", "platform"),
    ("/users/bad%20id%21/recommendations?platform=bike", "user_id"),
    (f"/users/{'u' * 65}/recommendations?platform=bike", "user_id"),
    ("/users/u0000001/recommendations?platform=bike&k=0", "k"),
    ("/users/u0000001/recommendations?platform=bike&k=1000", "k"),
    ("/users/u0000001/recommendations?platform=bike&k=ten", "k"),
    ("/users/u0000001/recommendations?platform=bike&row=nope", "row"),
])
def test_bad_requests_name_the_field(site, path, field):
    status, headers, body = call(site[0] + path)
    assert status == 400 and headers["content-type"] == "application/json"
    err = orjson.loads(body)
    assert err["field"] == field and field in err["error"]


def test_unknown_route_and_method(site):
    base = site[0]
    status, _, body = call(f"{base}/nope")
    assert status == 404 and orjson.loads(body)["error"] == "Not Found"
    status, headers, body = call(f"{base}/users/u0000001/recommendations?platform=bike", method="POST")
    assert status == 405 and "GET" in headers["allow"] and "error" in orjson.loads(body)


def test_healthz(site):
    base, _, v, _ = site
    status, _, body = call(f"{base}/healthz")
    h = orjson.loads(body)
    assert status == 200
    assert (h["status"], h["cache_version"], h["serve_date"], h["model_version"]) == (
        "ok", v.name, "2026-10-31", 4)
    assert 0 <= h["age_s"] < 600


def test_503_until_first_publish_then_serves(tmp_path):
    from homefeed.synthetic import synthetic_popular, synthetic_recommendations

    with serving(create_app(tmp_path / "cache", refresh_s=0)) as base:
        status, _, body = call(f"{base}/healthz")
        assert status == 503 and orjson.loads(body)["status"] == "unavailable"
        status, _, body = call(f"{base}/users/u0000001/recommendations?platform=bike")
        assert status == 503 and orjson.loads(body)["error"] == "no published cache"
        v = CacheStore(tmp_path / "cache").publish(
            synthetic_recommendations(3, serve_date=SERVE_DATE), synthetic_popular(), serve_date=SERVE_DATE,
            model_version=1)
        status, _, body = call(f"{base}/healthz")
        assert status == 200 and orjson.loads(body)["cache_version"] == v.name
        status, _, body = call(f"{base}/users/u0000001/recommendations?platform=bike")
        assert status == 200 and orjson.loads(body)["source"] == "personal"
