"""Read-service latency under a bounded open-loop load on loopback: the home-feed service
(`python -m homefeed.service`, one worker) in a child process, an asyncio HTTP/1.1 keep-alive
client here. Speed is measured here, never in tests.

    python -m benchmarks.serve_bench [--cache DIR] [--rate 500] [--duration 15] [--connections 64]
                                     [--http h11|httptools]

The cache is DIR's current version when given and published, else a synthetic one (20k users x
2 platforms x 4 rows x 10 items) in a temp folder. Requests are scheduled at a fixed rate
whatever the server does (open loop) and latency is counted from the scheduled time, so queueing
behind a slow response is in the figures. The mix: known users (some with k/row filters),
unknown users (popular fallback) and bad requests (400 expected). /healthz under the same load
in the same run is the baseline: the ratio of p99s is the cost of the lookup itself.
`--http httptools` runs the same app on uvicorn's httptools protocol, without the service's
protocol limits (head size while it arrives, arrival time, connections), as it ran before them:
the difference is what forcing h11 costs.
Writes benchmarks/results/serve.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from homefeed.cache import PLATFORMS, CacheStore, CacheVersion, connect_readonly

RESULTS = Path(__file__).parent / "results"


# -- the cache -----------------------------------------------------------------------------------
def synthetic_cache(root: Path, users: int) -> tuple[CacheVersion, float]:
    from homefeed.synthetic import synthetic_popular, synthetic_recommendations

    t0 = time.perf_counter()
    v = CacheStore(root).publish(synthetic_recommendations(users, k=10), synthetic_popular(),
                                 serve_date="2026-10-31", model_version=1)
    return v, time.perf_counter() - t0


def known_keys(version: CacheVersion, limit: int = 50_000) -> list[tuple[str, str]]:
    conn = connect_readonly(version.path)
    try:
        return conn.execute("SELECT user_id, platform FROM payload ORDER BY random() LIMIT ?", (limit,)).fetchall()
    finally:
        conn.close()


# -- the client ----------------------------------------------------------------------------------
class Conn:
    """One keep-alive HTTP/1.1 connection; just enough parsing for the service's responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> int:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(head[9:12])


@dataclass
class Phase:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # kind -> seconds
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    sent: int = 0
    elapsed: float = 0.0


async def drive(host: str, port: int, requests: list[tuple[str, str, int]], rate: float,
                connections: int, timeout: float) -> Phase:
    """Send `requests` (kind, path, expected status) at `rate`/s over a pool of connections."""
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(connections):
        c = Conn(host, port)
        await c.open()
        pool.put_nowait(c)
    now = time.perf_counter  # not loop.time(): uvloop's clock ticks in whole milliseconds
    out = Phase(sent=len(requests))
    last_done = 0.0

    async def one(scheduled: float, kind: str, path: str, expect: int) -> None:
        nonlocal last_done
        conn = await pool.get()
        try:
            status = await asyncio.wait_for(conn.get(path), timeout)
            out.statuses[status] += 1
            if status != expect:
                out.errors[f"{kind}: HTTP {status}, expected {expect}"] += 1
            else:
                out.latencies.setdefault(kind, []).append(now() - scheduled)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            out.errors[f"{kind}: {type(e).__name__}"] += 1
            await conn.open()  # the stream is in an unknown state: start a fresh one
        finally:
            last_done = now()
            pool.put_nowait(conn)

    t0 = now() + 0.05
    tasks = []
    for i, (kind, path, expect) in enumerate(requests):
        scheduled = t0 + i / rate
        if (delay := scheduled - now()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, kind, path, expect)))
    await asyncio.gather(*tasks)
    out.elapsed = last_done - t0
    while not pool.empty():
        pool.get_nowait().writer.close()
    return out


def rec_requests(keys: list[tuple[str, str]], row_ids: list[str], n: int, seed: int) -> list[tuple[str, str, int]]:
    rnd = random.Random(seed)
    reqs = []
    for _ in range(n):
        x = rnd.random()
        user, plat = rnd.choice(keys)
        if x < 0.80:
            reqs.append(("known", f"/users/{user}/recommendations?platform={plat}", 200))
        elif x < 0.85:
            reqs.append(("known k=5", f"/users/{user}/recommendations?platform={plat}&k=5", 200))
        elif x < 0.90:
            reqs.append(("known row=", f"/users/{user}/recommendations?platform={plat}&row={rnd.choice(row_ids)}", 200))
        elif x < 0.97:
            reqs.append(("unknown (popular)", f"/users/new{rnd.randrange(10**9)}/recommendations"
                                              f"?platform={rnd.choice(PLATFORMS)}", 200))
        else:
            reqs.append(("bad request", f"/users/{user}/recommendations?platform=xbox", 400))
    return reqs


def summarize(phase: Phase, target_rps: float, cpu_s: float | None) -> dict:
    allv = np.array([x for v in phase.latencies.values() for x in v]) * 1e3
    done = sum(phase.statuses.values())

    def pct(a: np.ndarray) -> dict:
        if not len(a):
            return {}
        return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
                "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()), "n": int(len(a))}

    return {"target_rps": target_rps, "achieved_rps": done / phase.elapsed if phase.elapsed else 0.0,
            "requests": phase.sent,
            "statuses": {str(k): v for k, v in sorted(phase.statuses.items())},
            "errors": dict(phase.errors), "error_count": sum(phase.errors.values()),
            "server_cpu_us_per_request": cpu_s / done * 1e6 if cpu_s is not None and done else None,
            **pct(allv), "by_kind": {k: pct(np.array(v) * 1e3) for k, v in sorted(phase.latencies.items())}}


# -- the server ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# the app on httptools without the service's protocol limits, as `python -m homefeed.service` ran it before
UNBOUNDED_HTTPTOOLS = ("import sys, uvicorn; from homefeed.service import create_app; "
                       "uvicorn.run(create_app(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]), "
                       "workers=1, access_log=False, log_level='warning', http='httptools')")


def start_service(cache: Path, port: int, log: Path, http: str = "h11") -> subprocess.Popen:
    cmd = ([sys.executable, "-m", "homefeed.service", "--cache", str(cache), "--host", "127.0.0.1",
            "--port", str(port)] if http == "h11" else
           [sys.executable, "-c", UNBOUNDED_HTTPTOOLS, str(cache), str(port)])
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("service did not become healthy in 60 s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=None, help="a published cache (default: synthetic)")
    p.add_argument("--users", type=int, default=20_000, help="synthetic cache: users (x2 platforms)")
    p.add_argument("--rate", type=float, default=500.0, help="target requests/s (open loop)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measured phase")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    p.add_argument("--http", choices=("h11", "httptools"), default="h11",
                   help="h11: the service as shipped; httptools: without its limits, for comparison")
    p.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = p.parse_args(argv)

    try:
        import uvloop
        loop_factory = uvloop.new_event_loop  # the client's own overhead, kept small
    except ImportError:
        loop_factory = None

    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "loadavg_at_start": os.getloadavg()},
                 "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        current = CacheStore(args.cache).current() if args.cache else None
        if current is not None:
            cache, version = args.cache, current
            out["cache"] = {"source": str(args.cache)}
        else:
            cache = Path(tmp) / "cache"
            version, publish_s = synthetic_cache(cache, args.users)
            out["cache"] = {"source": "synthetic", "publish_s": publish_s}
        out["cache"].update(version=version.name, keys=version.keys, rows=version.rows,
                            file_mb=version.path.stat().st_size / 1e6)
        print(f"cache {version.name}: {version.keys:,} keys, {version.rows:,} rows, "
              f"{out['cache']['file_mb']:.0f} MB", flush=True)
        keys = known_keys(version)
        n = int(args.rate * args.duration)
        warm_n = int(args.rate * args.warmup)
        rec_reqs = rec_requests(keys, list(version.row_ids), warm_n + n, seed=0)
        health_reqs = [("healthz", "/healthz", 200)] * (warm_n + n)

        port = free_port()
        proc = start_service(cache, port, Path(tmp) / "service.log", args.http)
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                for name, reqs in (("healthz", health_reqs), ("recommendations", rec_reqs)):
                    runner.run(drive("127.0.0.1", port, reqs[:warm_n], args.rate, args.connections, args.timeout))
                    cpu0 = cpu_seconds(proc.pid)
                    phase = runner.run(drive("127.0.0.1", port, reqs[warm_n:], args.rate,
                                             args.connections, args.timeout))
                    cpu1 = cpu_seconds(proc.pid)
                    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
                    out[name] = summarize(phase, args.rate, cpu)
                    print(f"{name}: {out[name]['achieved_rps']:.0f} req/s, p99 {out[name].get('p99_ms', 0):.2f} ms",
                          flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    out["machine"]["loadavg_at_end"] = os.getloadavg()
    h, r = out["healthz"], out["recommendations"]
    out["p99_ratio_recommendations_vs_healthz"] = r["p99_ms"] / h["p99_ms"] if h.get("p99_ms") else None

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\n| endpoint | target req/s | achieved req/s | p50 ms | p95 ms | p99 ms | max ms | errors "
          f"| server CPU µs/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("healthz", "recommendations"):
        s = out[name]
        cpu = f"{s['server_cpu_us_per_request']:.0f}" if s["server_cpu_us_per_request"] else "n/a"
        print(f"| {name} | {s['target_rps']:.0f} | {s['achieved_rps']:.0f} | {s['p50_ms']:.2f} | "
              f"{s['p95_ms']:.2f} | {s['p99_ms']:.2f} | {s['max_ms']:.2f} | {s['error_count']} | {cpu} |")
    print("\n| request kind | n | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for kind, s in r["by_kind"].items():
        print(f"| {kind} | {s['n']} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
    print(f"\np99 recommendations / p99 healthz: {out['p99_ratio_recommendations_vs_healthz']:.2f}x; "
          f"load average {out['machine']['loadavg_at_start'][0]:.1f} at start "
          f"({os.cpu_count()} CPUs, other processes may share them)")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
