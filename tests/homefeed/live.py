"""The read service as it runs in production (`python -m homefeed.service`: uvicorn, the h11
protocol with its limits) in a child process on a free loopback port, and what the tests read
from outside: HTTP answers, raw sockets, the process's RSS and descriptor count."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Live:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@contextlib.contextmanager
def live_service(cache: Path, log_dir: Path, *flags: str) -> Iterator[Live]:
    """Start the service on `cache` with `flags`, wait (at most 30 s) for /healthz, stop it after."""
    port = free_port()
    log = log_dir / f"service-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "homefeed.service", "--cache", str(cache),
                                 "--host", "127.0.0.1", "--port", str(port), *flags],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"service exited:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"service not healthy in 30 s:\n{log.read_text()[-2000:]}"
            try:
                if call(f"http://127.0.0.1:{port}/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        yield Live(proc, port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP/1.1 response, None when nothing (or no status line) came."""
    return int(response[9:12]) if response.startswith(b"HTTP/1.1 ") and len(response) >= 12 else None


def read_until_closed(sock: socket.socket, timeout: float, limit: int = 1 << 16) -> tuple[bytes, str]:
    """What the server sends until it closes: (bytes, "eof" | "reset" | "timeout")."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < limit and time.monotonic() < deadline:
        try:
            chunk = sock.recv(limit)
        except (ConnectionResetError, BrokenPipeError):
            return data, "reset"
        except TimeoutError:
            return data, "timeout"
        if not chunk:
            return data, "eof"
        data += chunk
    return data, "timeout"
