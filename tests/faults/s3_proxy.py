"""A TCP proxy on loopback in front of the S3 test server that can be cut and restored.

Cutting resets every live connection (SO_LINGER 0, so the client sees a reset, not a clean
close) and resets every new one until :meth:`CuttableProxy.restore`: what a dropped network or
a restarting S3 endpoint looks like to a client. The proxy reads the HTTP requests going through
it, so a test can cut at an exact request (e.g. the PUT of a Delta commit) instead of guessing
with sleeps:

    proxy.cut_on(lambda method, path: method == "PUT" and "/_delta_log/" in path, when="before")

``when`` is where the cut falls for the matching request:
  - ``"before"``: the request never reaches the server;
  - ``"mid_body"``: the headers and half the body reach the server, then the connection drops;
  - ``"response"``: the server handles the request in full, its response never reaches the client.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

Match = Callable[[str, str], bool]
WHEN = ("before", "mid_body", "response")


@dataclass
class _Trigger:
    match: Match
    when: str
    on_cut: Callable[[], None] | None = None
    fired: threading.Event = field(default_factory=threading.Event)


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN: the peer gets 'connection reset', like a dead network.

    SHUT_RD first: it wakes a thread blocked in recv() on this socket (sends nothing), otherwise
    that recv keeps the socket alive and the close only happens when the peer times out."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Conn:
    def __init__(self, proxy: "CuttableProxy", client: socket.socket, upstream: socket.socket):
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.drop_response = False  # set when a "response" trigger matched a request on this conn

    def close(self) -> None:
        _reset(self.client)
        _reset(self.upstream)

    def requests(self) -> None:
        """client -> server: forward byte for byte, parsing request boundaries on the way."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = self.client.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = (lines[0].split(" ") + ["", ""])[:2]
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:])}
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    # Not sent by object_store or boto3 here; stop parsing, keep proxying.
                    self.proxy._record(method, path, -1)
                    self.upstream.sendall(head + b"\r\n\r\n" + buf)
                    while chunk := self.client.recv(65536):
                        self.upstream.sendall(chunk)
                    return
                length = int(headers.get("content-length", "0") or 0)
                while len(buf) < length:
                    chunk = self.client.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                trigger = self.proxy._check(method, path, length)
                if trigger is None:
                    self.upstream.sendall(head + b"\r\n\r\n" + body)
                elif trigger.when == "before":
                    self.proxy._fire(trigger)
                    return
                elif trigger.when == "mid_body":
                    self.upstream.sendall(head + b"\r\n\r\n" + body[: length // 2])
                    self.proxy._fire(trigger)
                    return
                else:  # "response": the upstream reader cuts when the answer arrives
                    self.drop_response = True
                    self.proxy._armed = trigger
                    self.upstream.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            return
        finally:
            self.proxy._forget(self)

    def responses(self) -> None:
        """server -> client, raw; a dropped response cuts instead of being delivered."""
        try:
            while chunk := self.upstream.recv(65536):
                if self.drop_response:
                    self.proxy._fire(self.proxy._armed)
                    return
                self.client.sendall(chunk)
        except OSError:
            return
        finally:
            self.proxy._forget(self)


class CuttableProxy:
    """Forward 127.0.0.1:<port> to `upstream` ("http://host:port") until cut."""

    def __init__(self, upstream: str):
        up = urlparse(upstream)
        self._upstream = (up.hostname or "127.0.0.1", up.port or 80)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._cut = threading.Event()
        self._closed = False
        self._trigger: _Trigger | None = None
        self._armed: _Trigger | None = None
        self.log: list[tuple[str, str, int]] = []  # (method, path, body bytes) of every request seen
        self.refused = 0  # connections reset while cut
        self._thread = threading.Thread(target=self._accept, name="s3-proxy", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ control
    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """Reset every live connection now, and every new one until restore()."""
        self._cut.set()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            c.close()

    def restore(self) -> None:
        self._trigger = self._armed = None
        self._cut.clear()

    def cut_on(self, match: Match, *, when: str = "before",
               on_cut: Callable[[], None] | None = None) -> threading.Event:
        """Cut at the first request for which match(method, path) is true; returns an event set
        when the cut happened. `on_cut` runs at that moment (e.g. to start a recovery clock)."""
        if when not in WHEN:
            raise ValueError(f"when={when!r}: expected one of {WHEN}")
        self._trigger = _Trigger(match, when, on_cut)
        return self._trigger.fired

    def count(self, method: str, contains: str = "") -> int:
        return sum(1 for m, p, _ in self.log if m == method and contains in p)

    def close(self) -> None:
        self._closed = True
        self.cut()
        _reset(self._listener)

    def __enter__(self) -> "CuttableProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _record(self, method: str, path: str, length: int) -> None:
        with self._lock:
            self.log.append((method, path, length))

    def _check(self, method: str, path: str, length: int) -> _Trigger | None:
        self._record(method, path, length)
        t = self._trigger
        if t is not None and not t.fired.is_set() and t.match(method, path):
            self._trigger = None  # fires once
            return t
        return None

    def _fire(self, trigger: _Trigger | None) -> None:
        # mark first: the client sees the reset (and may check `fired`) as soon as cut() runs
        if trigger is not None and not trigger.fired.is_set():
            if trigger.on_cut is not None:
                trigger.on_cut()
            trigger.fired.set()
        self.cut()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.discard(conn)
                conn.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, client, upstream)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=conn.requests, daemon=True).start()
            threading.Thread(target=conn.responses, daemon=True).start()
