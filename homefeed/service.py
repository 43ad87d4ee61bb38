"""The read service: the app asks for a user's home-screen rows on one platform.

    GET /users/{user_id}/recommendations?platform=bike[&k=10][&row=for_you]
    GET /healthz

    python -m homefeed.service --cache DIR --host 127.0.0.1 --port 8000

Known users get their stored payload byte for byte when there is no filter; unknown users get
the platform's popular payload with their id filled in and "source": "popular" (a `row` filter
does not apply to it: the popular row stands in for every row, so a new user never gets an empty
screen). The service only reads: GET (and HEAD) routes only, the cache's SQLite files opened
read-only, CURRENT followed.

Inputs are checked before any lookup: user_id ^[A-Za-z0-9_-]{1,64}$, platform one of the published cache's platforms,
k ASCII digits in 1..max_k, row one of the version's rows; each at most once; the query string at
most MAX_QUERY bytes (414). A bad one is a 400 naming the field, echoing at most ECHO characters of
it. Query parameters other than platform, k and row are ignored (clients may add cache busters).
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
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from homefeed.cache import PLATFORM_ID, POPULAR_ROW, CacheReader, default_cache_dir

USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
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


def create_app(cache_dir: str | Path, *, refresh_s: float = 0.5, max_k: int = 50) -> Starlette:
    reader = CacheReader(cache_dir, refresh_s=refresh_s)

    # Handlers are async and query SQLite inline: a point lookup on a local file takes
    # microseconds, less than a hop to the thread pool would.
    async def recommendations(request: Request) -> Response:
        if len(request.scope["query_string"]) > MAX_QUERY:  # checked before it is parsed
            return _json({"error": f"query string longer than {MAX_QUERY} bytes", "field": "query"}, 414)
        user_id = request.path_params["user_id"]
        if not USER_ID.fullmatch(user_id):
            return _bad("user_id", f"user_id must match ^[A-Za-z0-9_-]{{1,64}}$, got {_echo(user_id)}")
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

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path  # bounded like any echoed input
        return _json({"error": exc.detail, "path": path[:ECHO] + ("..." if len(path) > ECHO else "")},
                     exc.status_code, exc.headers)

    app = Starlette(
        routes=[Route("/users/{user_id}/recommendations", recommendations, methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={404: http_error, 405: http_error},
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
    p.add_argument("--log-level", default="warning")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    args = p.parse_args(argv)
    cache = args.cache or default_cache_dir()
    app = create_app(cache, refresh_s=args.refresh_s, max_k=args.max_k)
    print(f"homefeed: serving {cache} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=args.access_log,
                log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
