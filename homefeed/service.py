"""The read service: the app asks for a user's home-screen rows on one platform.

    GET /users/{user_id}/recommendations?platform=bike[&k=10][&row=for_you]
    GET /healthz
    GET /openapi.json   (the OpenAPI 3.1 description, homefeed.openapi)

    python -m homefeed.service --cache DIR --host 127.0.0.1 --port 8000

Known users get their stored payload byte for byte when there is no filter; unknown users get
the platform's popular payload with their id filled in and "source": "popular" (a `row` filter
does not apply to it: the popular row stands in for every row, so a new user never gets an empty
screen). The service only reads: GET (and HEAD) routes only, the cache's SQLite files opened
read-only, CURRENT followed.

Inputs are checked before any lookup: user_id by USER_ID below (1-128 characters, no whitespace,
control character or '/', not "." or ".."; non-ASCII percent-encoded as UTF-8), platform one of
the published cache's platforms, k ASCII digits in 1..max_k, row one of the version's rows; each
at most once; the query string at most MAX_QUERY bytes (414). A bad one is a 400 naming the field,
echoing at most ECHO characters of it. Query parameters other than platform, k and row are
ignored (clients may add cache busters).

Limits on the connection (all flags of `main`, defaults below; uvicorn's `h11` protocol is forced,
because only there is the request head bounded while it arrives):
- request head (request line + headers) over --max-header-bytes (16 KiB): 431, connection closed;
  more than --max-headers header fields (100): 431. Both JSON {"error", "field": "headers"}.
- a request (head and body) that has not arrived whole --request-timeout-s (10 s) after the
  connection opened or the previous response ended: 408 and closed (closed silently when nothing
  of it arrived); an idle keep-alive connection is closed after --keep-alive-s (5 s).
- at most --limit-concurrency (1000) connections: a connection beyond it gets a 503 and is closed
  at once; a request that arrives while the limit is reached gets uvicorn's 503. The open-file
  limit is raised to fit if it is lower, so the process never runs out of descriptors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from homefeed.cache import PLATFORM_ID, POPULAR_ROW, CacheReader, default_cache_dir
from homefeed.openapi import openapi
from homefeed.limits import (
    KEEP_ALIVE_S,
    LIMIT_CONCURRENCY,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    REQUEST_TIMEOUT_S,
    HeaderLimits,
    bounded_h11,
    ensure_fds,
)

# The user-id rule. The lakehouse has ONE id grammar, `ID_PATTERN` in lakehouse/contract.py
# (^\w[\w.:@+-]{0,127}$, Unicode \w as in polars/Rust regex, at most 128 characters), which ingest
# and the mapped import enforce. homefeed may not import lakehouse (tests/test_layout.py), so the
# service checks a looser rule that every id of that grammar passes (tests/homefeed/test_service_ids.py
# samples the grammar against it): 1..USER_ID_MAX characters, none of them whitespace, a control
# character, '/' or U+FFFD (what a path that is not UTF-8 decodes to), and not the dot segments
# "." or "..", which clients and proxies rewrite. The lookup is an exact `=`, so anything else is
# harmless: at worst an unknown user, who gets the popular fallback.
USER_ID_MAX = 128
USER_ID = re.compile(rf"(?!\.\.?\Z)[^\s\x00-\x1f\x7f-\x9f/\ufffd]{{1,{USER_ID_MAX}}}")
USER_ID_RULE = (f"1-{USER_ID_MAX} characters without whitespace, control characters or '/' "
                "(non-ASCII percent-encoded as UTF-8)")
K = re.compile(r"[0-9]{1,6}")  # not int(): it also takes " 5", "+5", "5_0" and non-ASCII digits
PARAMS = ("platform", "k", "row")
MAX_QUERY = 1024  # bytes; a real query ("platform=bike&k=10&row=for_you") is far shorter
ECHO = 80  # characters of a rejected value repeated in its error
JSON = "application/json"

def _json(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _bad(field: str, message: str) -> Response:
    return _json({"error": message, "field": field}, 400)


def _echo(value: str) -> str:
    """repr of at most ECHO characters: an error never mirrors an unbounded input back."""
    return repr(value[:ECHO]) + ("..." if len(value) > ECHO else "")


def _parse_k(raw: str | None, max_k: int) -> int | None | Response:
    if raw is None:
        return None
    k = int(raw) if K.fullmatch(raw) else 0
    if not 1 <= k <= max_k:
        return _bad("k", f"k must be an integer in 1..{max_k}, got {_echo(raw)}")
    return k


def create_app(cache_dir: str | Path, *, refresh_s: float = 0.5, max_k: int = 50,
               max_headers: int = MAX_HEADERS, max_header_bytes: int = MAX_HEADER_BYTES) -> Starlette:
    reader = CacheReader(cache_dir, refresh_s=refresh_s)

    # Handlers are async and query SQLite inline: a point lookup on a local file takes
    # microseconds, less than a hop to the thread pool would.
    async def recommendations(request: Request) -> Response:
        if len(request.scope["query_string"]) > MAX_QUERY:  # checked before it is parsed
            return _json({"error": f"query string longer than {MAX_QUERY} bytes", "field": "query"}, 414)
        user_id = request.path_params["user_id"]
        if not USER_ID.fullmatch(user_id):
            return _bad("user_id", f"user_id must be {USER_ID_RULE}, got {_echo(user_id)}")
        q = request.query_params
        for name in PARAMS:  # a repeated one is ambiguous (first or last?): refuse it
            if len(q.getlist(name)) > 1:
                return _bad(name, f"{name} given {len(q.getlist(name))} times, expected at most once")
        platform = q.get("platform")
        version = reader.version
        known = list(version.platforms) if version is not None else []
        if platform is None or not PLATFORM_ID.fullmatch(platform) or (known and platform not in known):
            got = "nothing" if platform is None else _echo(platform)
            return _bad("platform", f"platform must be one of {known}, got {got}")
        k = _parse_k(q.get("k"), max_k)
        if isinstance(k, Response):
            return k
        row = q.get("row")

        hit = reader.lookup(user_id, platform)  # personal or popular, from one version
        if hit is None:
            return _json({"error": "no published cache"}, 503)
        if row is not None and row not in hit.version.row_ids and row != POPULAR_ROW:
            return _bad("row", f"unknown row {_echo(row)}, expected one of "
                               f"{[*hit.version.row_ids, POPULAR_ROW]}")
        headers = {"x-cache-version": hit.version.name}
        if hit.personal and k is None and row is None:
            return Response(hit.body, media_type=JSON, headers=headers)
        payload = orjson.loads(hit.body)
        if not hit.personal:
            payload["user_id"] = user_id
        elif row is not None:
            payload["rows"] = [r for r in payload["rows"] if r["row_id"] == row]
        if k is not None:
            for r in payload["rows"]:
                r["items"] = r["items"][:k]
        return _json(payload, headers=headers)

    async def healthz(request: Request) -> Response:
        v = reader.version
        if v is None:
            return _json({"status": "unavailable", "error": "no published cache",
                          "cache_version": None}, 503)
        age = (dt.datetime.now(dt.UTC) - v.created_at).total_seconds()
        return _json({"status": "ok", "cache_version": v.name, "serve_date": v.serve_date.isoformat(),
                      "model_version": v.model_version, "keys": v.keys, "age_s": round(age, 1)})

    spec = orjson.dumps(openapi(max_k))

    async def openapi_json(request: Request) -> Response:
        return Response(spec, media_type=JSON)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path  # bounded like any echoed input
        return _json({"error": exc.detail, "path": path[:ECHO] + ("..." if len(path) > ECHO else "")},
                     exc.status_code, exc.headers)

    app = Starlette(
        routes=[Route("/users/{user_id}/recommendations", recommendations, methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"]),
                Route("/openapi.json", openapi_json, methods=["GET"])],
        exception_handlers={404: http_error, 405: http_error},
        middleware=[Middleware(HeaderLimits, max_headers=max_headers, max_bytes=max_header_bytes)],
    )
    app.state.reader = reader
    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m homefeed.service", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=None,
                   help="cache root (default: $HOMEFEED_CACHE_DIR, else $LAKEHOUSE_DATA_DIR/cache)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--refresh-s", type=float, default=0.5, help="how often CURRENT is re-checked")
    p.add_argument("--max-k", type=int, default=50)
    p.add_argument("--max-header-bytes", type=int, default=MAX_HEADER_BYTES,
                   help="request line + headers, else 431 (default: %(default)s)")
    p.add_argument("--max-headers", type=int, default=MAX_HEADERS,
                   help="header fields per request, else 431 (default: %(default)s)")
    p.add_argument("--request-timeout-s", type=float, default=REQUEST_TIMEOUT_S,
                   help="for a request to arrive whole, else 408 and close (default: %(default)s)")
    p.add_argument("--keep-alive-s", type=int, default=KEEP_ALIVE_S,
                   help="idle keep-alive connections are closed after this (default: %(default)s)")
    p.add_argument("--limit-concurrency", type=int, default=LIMIT_CONCURRENCY,
                   help="open connections; beyond it 503 (default: %(default)s)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    args = p.parse_args(argv)
    for name in ("max_header_bytes", "max_headers", "request_timeout_s", "keep_alive_s", "limit_concurrency"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    ensure_fds(args.limit_concurrency)
    cache = args.cache or default_cache_dir()
    app = create_app(cache, refresh_s=args.refresh_s, max_k=args.max_k, max_headers=args.max_headers,
                     max_header_bytes=args.max_header_bytes)
    print(f"homefeed: serving {cache} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=args.access_log,
                log_level=args.log_level,
                http=bounded_h11(args.request_timeout_s),  # h11: the only protocol that bounds the head
                h11_max_incomplete_event_size=args.max_header_bytes,
                limit_concurrency=args.limit_concurrency, timeout_keep_alive=args.keep_alive_s,
                ws="none")  # no websocket routes: an Upgrade request is plain HTTP
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
