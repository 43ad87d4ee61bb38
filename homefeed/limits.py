"""Limits on the read service's connections: the request head's size and field count, the time
a request may take to arrive, and the number of open connections (see homefeed.service).

uvicorn 0.54 bounds none of these with httptools, and with h11 only the size of a head that is
still arriving; BoundedH11Protocol and HeaderLimits add the rest.
"""

from __future__ import annotations

import asyncio
import http
import resource

import h11
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.responses import Response
from uvicorn.protocols.http.h11_impl import H11Protocol

JSON = "application/json"

# Connection limits (flags of `main`). The app's requests are a few hundred bytes, arrive in
# milliseconds and come over a pool of keep-alive connections (the benchmark: 64 for 500 req/s).
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; h11's own default, and Node's
MAX_HEADERS = 100  # header fields; Apache's LimitRequestFields
REQUEST_TIMEOUT_S = 10.0  # for a whole request to arrive: a slow mobile link needs well under this
KEEP_ALIVE_S = 5  # idle keep-alive connection; uvicorn's default
# The one worker spends about 0.3 ms of CPU on a request (about 3,000 req/s at most: benchmarks/
# serve_bench.py), so a client needs a few dozen connections and more than 1,000 only queue. Each
# costs a descriptor: 1,000 + the ~15 the process holds anyway fit the common 1,024 open-files
# limit; ensure_fds raises the soft limit to LIMIT_CONCURRENCY + FD_RESERVE (listening socket,
# SQLite files, stdio) so that accept() never fails with EMFILE, which stalls it for everyone.
LIMIT_CONCURRENCY = 1000
FD_RESERVE = 64



class HeaderLimits:
    """ASGI middleware: 431 for more than `max_headers` header fields or a head over `max_bytes`.

    The protocol (BoundedH11Protocol) refuses a head that outgrows the limit while it arrives; a
    complete head that came in one read (a few hundred KiB at most) reaches the app whole, and is
    refused here.
    Counted like the head on the wire: path, query and each "name: value\\r\\n".
    """

    def __init__(self, app: ASGIApp, max_headers: int = MAX_HEADERS, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app, self.max_headers, self.max_bytes = app, max_headers, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = len(scope["raw_path"]) + len(scope["query_string"]) + sum(len(n) + len(v) + 4 for n, v in headers)
            error = (f"{len(headers)} header fields, at most {self.max_headers} accepted"
                     if len(headers) > self.max_headers else
                     f"request head of {size} bytes, at most {self.max_bytes} accepted"
                     if size > self.max_bytes else None)
            if error is not None:
                body = orjson.dumps({"error": error, "field": "headers"})
                await Response(body, status_code=431, media_type=JSON,
                               headers={"connection": "close"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _raw_response(status: int, error: str, field: str) -> bytes:
    """A whole JSON error response with `connection: close`, for the protocol to write itself."""
    body = orjson.dumps({"error": error, "field": field})
    return (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: {JSON}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the three bounds it lacks (uvicorn 0.54).

    - Arrival time: uvicorn arms no timer until a first response (and any byte cancels its
      keep-alive timer), so a client that sends half a request holds the connection forever. Here
      every request must arrive whole within `request_timeout_s` of the connection opening or the
      previous response ending: else 408 and close, or a silent close when nothing of it came.
    - Connections: uvicorn's `limit_concurrency` answers 503 only once a request has arrived, so
      idle or slow connections still pile up descriptors. Here a connection beyond the limit gets a
      503 and is closed at once.
    - Head size: h11 refuses an unfinished head over `max_incomplete_event_size` (error_status_hint
      431), but uvicorn answers every parse error with a bare 400 "Invalid HTTP request received.";
      here that one is a 431 that says so.
    It reads only public h11 API (their_state, our_state, trailing_data) and touches no private
    attribute, but the H11Protocol methods it extends (OVERRIDDEN) are not a documented uvicorn
    API: bounded_h11() refuses to start if one is gone, and tests/homefeed/test_service_limits.py
    checks each behaviour from outside, so an upgrade that changes them fails loudly.
    """

    request_timeout_s: float = REQUEST_TIMEOUT_S  # set per server by bounded_h11()
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.config.limit_concurrency
        if limit is not None and len(self.connections) > limit:
            self.logger.warning("Refused a connection: %d open, limit %d.", len(self.connections) - 1, limit)
            self._close_with(503, f"too many connections (limit {limit}), retry later", "connection")
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # arrived whole (or closed)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next pipelined request
        if not self.transport.is_closing() and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm()  # the next request's deadline; a body still arriving keeps its own

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size
        if limit is not None and len(self.conn.trailing_data[0]) > limit:
            self._close_with(431, f"request head over {limit} bytes", "headers")
        else:
            super().send_400_response(msg)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE and self.conn.trailing_data[0]:
            self._close_with(408, f"request not received whole within {self.request_timeout_s:g} s", "request")
        else:  # nothing of a request came, or its body trickles after the response: just close
            self.transport.close()

    def _close_with(self, status: int, error: str, field: str) -> None:
        self._disarm()
        self.transport.write(_raw_response(status, error, field))
        self.transport.close()


OVERRIDDEN = ("connection_made", "connection_lost", "handle_events", "on_response_complete", "send_400_response")


def bounded_h11(request_timeout_s: float) -> type[BoundedH11Protocol]:
    """The protocol class for uvicorn's `http=`, with this server's arrival timeout."""
    missing = [name for name in OVERRIDDEN if not callable(getattr(H11Protocol, name, None))]
    if missing:
        raise RuntimeError(f"uvicorn's H11Protocol has no {missing} any more: update BoundedH11Protocol")
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"request_timeout_s": request_timeout_s})


def ensure_fds(limit_concurrency: int) -> None:
    """Raise the soft open-files limit to fit the connections and FD_RESERVE, or refuse to start."""
    need = limit_concurrency + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise SystemExit(f"--limit-concurrency {limit_concurrency} needs {need} open files, the hard limit "
                         f"is {hard}: lower --limit-concurrency or raise `ulimit -Hn`")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
