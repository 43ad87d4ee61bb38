"""The read service's limits, measured from outside on the real process (`python -m
homefeed.service` in a child, raw sockets on 127.0.0.1): the request head's size and field count,
the time a request may take to arrive, the number of connections. Every loop is bounded in count
and time and closes its sockets."""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import orjson
import pytest

from homefeed.cache import CacheStore
from homefeed.synthetic import synthetic_popular, synthetic_recommendations
from tests.homefeed.data import SERVE_DATE
from tests.homefeed.live import ROOT, call, fd_count, live_service, read_until_closed, rss_kb, status_of

MB = 1 << 20
SLOW = 1_000  # slow connections at once (the measured attack held 1,000 for 30 s)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    CacheStore(root).publish(synthetic_recommendations(30, k=6, seed=5, serve_date=SERVE_DATE),
                             synthetic_popular(k=8, seed=7), serve_date=SERVE_DATE, model_version=1)
    return root


@pytest.fixture
def fds_for_the_client():
    """Room for SLOW sockets in this process (the common soft limit is 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = SLOW + 200
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"open-files hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def healthy(live, within_s: float = 1.0) -> None:
    t0 = time.monotonic()
    status, body = call(live.base + "/healthz", timeout=within_s + 1)
    took = time.monotonic() - t0
    assert status == 200 and orjson.loads(body)["status"] == "ok", (status, body[:200])
    assert took < within_s, f"/healthz took {took:.2f} s"


def send_head(port: int, head_bytes: int, *, line_bytes: int = 1024, finish: bool = True,
              chunk_lines: int = 64) -> tuple[int, str | None, bytes, str]:
    """One request whose head is `head_bytes` of header lines of `line_bytes` each, written
    `chunk_lines` lines at a time; stops at the first send error. Returns (bytes sent, the send
    error, what came back, how the read ended)."""
    line = b"x-flood: " + b"a" * (line_bytes - 11) + b"\r\n"
    chunk = line * chunk_lines
    sent, error = 0, None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            while sent < head_bytes:  # bounded: head_bytes / len(chunk) sends at most
                s.sendall(chunk)
                sent += len(chunk)
            if finish:
                s.sendall(b"\r\n")
        except (ConnectionResetError, BrokenPipeError) as e:
            error = type(e).__name__
        except TimeoutError:
            error = "TimeoutError"  # the server stopped reading without closing
        data, end = read_until_closed(s, timeout=5)
    return sent, error, data, end


def test_header_floods_are_refused_and_memory_returns(cache, tmp_path):
    with live_service(cache, tmp_path) as live:
        # Once first, so that code paths run for the first time are in the baseline: a head just
        # over 16 KiB, unfinished, which the server reads whole before it answers (no reset).
        sent, error, data, end = send_head(live.port, 17 * 1024, finish=False)
        assert (error, status_of(data), end) == (None, 431, "eof"), data[:300]
        body = orjson.loads(data.partition(b"\r\n\r\n")[2])
        assert body["field"] == "headers" and "16384 bytes" in body["error"]
        healthy(live)
        before = rss_kb(live.pid)

        # 32 MB of headers: refused long before the end (the server closes; its unread input
        # resets the connection, so the 431 may be lost on the way).
        for _ in range(2):
            sent, error, data, end = send_head(live.port, 32 * MB)
            assert sent < 32 * MB and error in ("ConnectionResetError", "BrokenPipeError"), (sent, error)
            assert status_of(data) in (431, None) and end in ("eof", "reset"), data[:300]
        # 10,000 headers in one write, finished: refused while it arrives (431 from the protocol)
        # or, when it came in one read, by the field count (431 from the app)
        sent, error, data, end = send_head(live.port, 10_000 * 16, line_bytes=16, chunk_lines=10_000)
        assert status_of(data) in (431, None) and end in ("eof", "reset"), data[:300]
        assert error is not None or status_of(data) == 431
        # a small head with too many fields: the app's 431 names it
        sent, error, data, end = send_head(live.port, 101 * 32, line_bytes=32, chunk_lines=101)
        assert (error, status_of(data), end) == (None, 431, "eof"), data[:300]
        assert orjson.loads(data.partition(b"\r\n\r\n")[2]) == {
            "error": "102 header fields, at most 100 accepted", "field": "headers"}

        healthy(live)
        after = rss_kb(live.pid)
        # before the limits, one 32 MB flood left the process 38 MB bigger for good
        assert after - before < 4 * 1024, f"RSS {before} kB before the floods, {after} kB after"


@contextlib.contextmanager
def open_sockets(n: int, port: int, first_bytes: bytes | None) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
            if first_bytes:
                s.sendall(first_bytes)
        yield socks
    finally:
        for s in socks:
            s.close()


def wait_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, tuple[bytes, float]]:
    """Read every socket until the server closes it or `timeout` passes: sock -> (bytes, when)."""
    got: dict[socket.socket, bytes] = {s: b"" for s in socks}
    closed: dict[socket.socket, tuple[bytes, float]] = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                s = key.fileobj
                try:
                    chunk = s.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    chunk = b""
                if chunk:
                    got[s] += chunk
                else:
                    closed[s] = (got[s], time.monotonic())
                    sel.unregister(s)
    return closed


def test_slow_requests_are_closed_after_the_timeout(cache, tmp_path, fds_for_the_client):
    timeout = 2.0
    with live_service(cache, tmp_path, "--request-timeout-s", str(timeout),
                      "--limit-concurrency", str(SLOW + 100)) as live:
        healthy(live)
        fds_before = fd_count(live.pid)
        t0 = time.monotonic()
        partial_head = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: "
        partial_body = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n{"
        with open_sockets(SLOW - 200, live.port, partial_head) as heads, \
                open_sockets(100, live.port, partial_body) as bodies, \
                open_sockets(100, live.port, None) as idle:
            opened = time.monotonic()
            assert opened - t0 < timeout, "opening took longer than the timeout: the test would be void"
            time.sleep(0.2)
            assert fd_count(live.pid) >= fds_before + SLOW - 50  # the server holds them now
            for _ in range(3):  # and still answers
                healthy(live, within_s=1.0)

            closed = wait_closed(heads + bodies + idle, timeout=timeout + 8)
            assert len(closed) == SLOW, f"{SLOW - len(closed)} slow connections still open"
            first = min(when for _, when in closed.values())
            assert first - t0 > timeout - 0.5, "closed before the timeout"
            assert all(status_of(closed[s][0]) == 408 for s in heads)  # half a head: 408
            body = orjson.loads(closed[heads[0]][0].partition(b"\r\n\r\n")[2])
            assert body == {"error": f"request not received whole within {timeout:g} s", "field": "request"}
            assert all(status_of(closed[s][0]) == 200 for s in bodies)  # answered, then cut off
            assert all(closed[s][0] == b"" for s in idle)  # nothing sent: closed silently

        deadline = time.monotonic() + 5
        while fd_count(live.pid) > fds_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fd_count(live.pid) <= fds_before
        healthy(live)

        # the deadline is per request: a keep-alive client that sends one every 0.5 s for longer
        # than the timeout is never cut off
        with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
            for _ in range(int(timeout / 0.5) + 3):
                s.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                with s.makefile("rb") as f:
                    status = status_of(f.readline())
                    length = 0
                    while (line := f.readline()) not in (b"\r\n", b""):  # bounded by the response
                        name, _, value = line.partition(b":")
                        length = int(value) if name.lower() == b"content-length" else length
                    body = f.read(length)
                assert status == 200 and orjson.loads(body)["status"] == "ok"
                time.sleep(0.5)


def test_connections_beyond_the_limit_get_503(cache, tmp_path):
    limit = 20
    with live_service(cache, tmp_path, "--limit-concurrency", str(limit)) as live:
        fds_before = fd_count(live.pid)
        with open_sockets(limit - 1, live.port, None) as held:
            time.sleep(0.2)
            status, body = call(live.base + "/healthz")  # the limit-th connection: uvicorn's 503
            assert status == 503 and body == b"Service Unavailable"
            with open_sockets(1 + 50, live.port, None) as extra:  # one reaches the limit, 50 beyond
                refused = wait_closed(extra[1:], timeout=5)  # nothing sent: refused at once
                assert len(refused) == 50
                answers = [data for data, _ in refused.values()]
                assert all(status_of(a) == 503 for a in answers), answers[0][:300]
                assert orjson.loads(answers[0].partition(b"\r\n\r\n")[2]) == {
                    "error": f"too many connections (limit {limit}), retry later", "field": "connection"}
                assert fd_count(live.pid) <= fds_before + limit + 1
            assert len(held) == limit - 1
        deadline = time.monotonic() + 5
        while fd_count(live.pid) > fds_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fd_count(live.pid) <= fds_before
        healthy(live)


def test_open_files_limit_is_raised_to_fit_the_connections():
    # in a child: the limits of this process are not the test's to change
    code = ("import resource, sys; from homefeed.limits import FD_RESERVE, ensure_fds as _ensure_fds\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "_ensure_fds(1000); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_RESERVE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512)); _ensure_fds(1000)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1000 + 64:
        pytest.skip(f"open-files hard limit {hard}")
    assert out.stdout.split() == ["1000"], out.stderr
    assert out.returncode == 1 and "--limit-concurrency 1000 needs 1064 open files, the hard limit is 512" in out.stderr
