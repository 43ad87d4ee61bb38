"""The read service over real HTTP: uvicorn in a thread on a loopback socket, urllib as client
(httpx, which starlette's TestClient needs, is not a dependency)."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
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
    (f"/users/{'u' * 129}/recommendations?platform=bike", "user_id"),  # the contract's max is 128
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


# -- security: read-only, bounded, validated ---------------------------------------------------
REC = "/users/u0000007/recommendations?platform=bike"


def _state(root) -> list[tuple[str, int, int]]:
    """Every file under the cache root with its size and mtime: what a write would change."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*") if p.is_file())


def test_only_read_routes(site):
    app = create_app(site[1])
    assert {m for r in app.routes for m in r.methods} == {"GET", "HEAD"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_write_methods_are_refused_and_change_nothing(site, method):
    base, root, _, _ = site
    before, body_before = _state(root), call(base + REC)[2]
    for path in (REC, "/healthz"):
        req = urllib.request.Request(base + path, data=b'{"rows": []}', method=method,
                                     headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError(f"{method} {path} succeeded")
        except urllib.error.HTTPError as e:
            assert e.code == 405 and set(e.headers["allow"].split(", ")) == {"GET", "HEAD"}
            assert "error" in orjson.loads(e.read())
    assert _state(root) == before and call(base + REC)[2] == body_before
    status, headers, body = call(base + REC, method="HEAD")  # HEAD: GET's headers, no body
    assert status == 200 and body == b"" and headers["x-cache-version"] == site[2].name


def test_reader_connection_is_read_only(site):
    root = site[1]
    reader = create_app(root).state.reader  # the service's own reader
    conn = reader._snapshot().conn
    before = _state(root)
    for sql in ("INSERT INTO payload VALUES ('evil', 'bike', x'00')", "DELETE FROM payload",
                "UPDATE meta SET value = 'x'", "CREATE TABLE t (x)", "DROP TABLE popular",
                "PRAGMA user_version = 7"):
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute(sql)
    assert _state(root) == before and reader.get("evil", "bike") is None
    assert reader.get("u0000007", "bike") is not None
    reader.close()


LONG = 10_000
SQLISH = urllib.parse.quote("' OR 1=1 --")


@pytest.mark.parametrize("path, status, field", [
    (f"/users/{'a' * LONG}/recommendations?platform=bike", 400, "user_id"),
    (f"/users/{SQLISH}/recommendations?platform=bike", 400, "user_id"),
    ("/users/../recommendations?platform=bike", 400, "user_id"),
    ("/users/%2E%2E/recommendations?platform=bike", 400, "user_id"),
    ("/users/u0000007%0A/recommendations?platform=bike", 400, "user_id"),  # not u0000007's rows
    ("/users/u0000007%00/recommendations?platform=bike", 400, "user_id"),
    ("/users/u0000007%20/recommendations?platform=bike", 400, "user_id"),
    # (ü and fullwidth digits are ids of the lakehouse grammar now: tests/homefeed/test_service_ids.py)
    ("/users/%E2%80%A8/recommendations?platform=bike", 400, "user_id"),  # U+2028, a line separator
    ("/users/a%C2%85b/recommendations?platform=bike", 400, "user_id"),  # U+0085, a C1 control
    ("/users/%ff%fe/recommendations?platform=bike", 400, "user_id"),  # not UTF-8
    ("/users/u0000007/recommendations?platform=BIKE", 400, "platform"),
    ("/users/u0000007/recommendations?platform=", 400, "platform"),
    ("/users/u0000007/recommendations?platform=bike%00", 400, "platform"),
    (f"/users/u0000007/recommendations?platform={'x' * 900}", 400, "platform"),
    ("/users/u0000007/recommendations?platform=bike&platform=tread", 400, "platform"),
    (REC + "&k=-1", 400, "k"),
    (REC + "&k=21", 400, "k"),  # max_k is 20 here
    (REC + "&k=" + "9" * 40, 400, "k"),
    (REC + "&k=1.5", 400, "k"),
    (REC + "&k=", 400, "k"),
    (REC + "&k=%2B5", 400, "k"),  # int() would take "+5", " 5", "5_0" and "５"
    (REC + "&k=%205", 400, "k"),
    (REC + "&k=5_0", 400, "k"),
    (REC + "&k=%EF%BC%95", 400, "k"),
    (REC + "&k=2&k=3", 400, "k"),
    (REC + "&row=" + "r" * 900, 400, "row"),
    (REC + "&row=for_you&row=morning", 400, "row"),
    (REC + "&foo=" + "y" * 2_000, 414, "query"),  # the query string is bounded as a whole
    (f"/users/{'a' * LONG}/recommendations?platform=bike&x={'y' * 2_000}", 414, "query"),
])
def test_hostile_inputs_are_refused_by_field(site, path, status, field):
    got, headers, body = call(site[0] + path)
    assert got == status and headers["content-type"] == "application/json", (got, body[:200])
    err = orjson.loads(body)
    assert err["field"] == field and field in err["error"]
    assert len(body) < 400 and "rows" not in err  # a truncated echo, never a payload


@pytest.mark.parametrize("path", ["/users/..%2F..%2Fetc%2Fpasswd/recommendations?platform=bike",
                                  "/users/u0000007/..%2F..%2F/recommendations?platform=bike",
                                  "/users/u0000007/recommendations/extra?platform=bike",
                                  "/" + "z" * LONG])
def test_paths_off_the_routes_are_404_with_a_bounded_echo(site, path):
    status, headers, body = call(site[0] + path)
    assert status == 404 and headers["content-type"] == "application/json"
    assert orjson.loads(body)["error"] == "Not Found" and len(body) < 200


@pytest.mark.parametrize("user_id", ["U0000007", "u000000_", "u0000007-", "u00000070", "u000000"])
def test_lookalike_ids_never_get_another_users_rows(site, user_id):
    # the lookup is `=` on the exact id: case, a LIKE wildcard (_) or a prefix match nobody else
    status, _, body = call(f"{site[0]}/users/{user_id}/recommendations?platform=bike")
    p = orjson.loads(body)
    assert status == 200 and (p["user_id"], p["source"]) == (user_id, "popular")


def test_unknown_params_are_ignored(site):
    base = site[0]
    plain = call(base + REC)
    # the path's user id wins over a user_id param; cache busters and the like change nothing
    noisy = call(base + REC + "&user_id=u0000001&foo=bar&callback=x&_=1700000000")
    assert plain[0] == noisy[0] == 200 and plain[2] == noisy[2]
    assert orjson.loads(noisy[2])["user_id"] == "u0000007"
