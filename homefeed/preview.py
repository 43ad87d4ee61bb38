"""The home-screen preview: a page that shows one user's home screen per platform as the app
does (rows of class cards), beside what the user did and, on simulated data, what they truly
like, for a reviewer to judge the recommendations by eye.

    GET /?user=u0000022[&model=champion|challenger]    (no user: a random one from the cache)

The champion's rows are the published cache's. The other model (`PreviewSource.challenger`) is
scored on demand by the source; without one it is the popularity ranker (the cache's popular
rows). An unknown user gets the popular rows and the page says so; a class the catalogue lacks
(no title in the cache) is shown by its id and marked. Read-only: GET routes only, the cache
opened read-only; `serve()` binds 127.0.0.1 unless told otherwise.

This module knows nothing of the lakehouse (tests/test_layout.py): `ml.preview` hands it a
source that reads the history, the truth and the challenger there.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from homefeed.cache import CacheReader
from homefeed.service import USER_ID

MODELS = ("champion", "challenger")
HISTORY = 10  # last workouts shown


@dataclass
class PreviewSource:
    """What the page shows besides the cache; each part optional.

    history(user_id, n) -> the user's last n workouts, newest first: dicts with date, hour,
        platform, title, instructor, discipline.
    favourites(user_ids) -> {user_id: {"instructors": [...], "disciplines": [...]} or None}
        (simulated data's planted truth).
    challenger(user_id, platform) -> a screen payload (dict, the cache's shape) or None;
        `challenger_name` labels it.
    users() -> ids to pick a random user from (default: the cache's sample)."""

    history: Callable[[str, int], list[dict]] | None = None
    favourites: Callable[[list[str]], dict] | None = None
    challenger: Callable[[str, str], dict | None] | None = None
    challenger_name: str = "popularity (the fallback ranker)"
    users: Callable[[], list[str]] | None = None
    notes: list[str] = field(default_factory=list)


_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;background:#111;color:#eee}
a{color:#9cf} h1{font-size:20px} h2{font-size:16px;margin:18px 0 6px}
.layout{display:flex;gap:24px;align-items:flex-start} .screens{flex:3;min-width:0} .side{flex:1}
.row{margin:6px 0 14px} .row h3{font-size:14px;margin:4px 0}
.cards{display:flex;gap:8px;overflow-x:auto;padding-bottom:4px}
.card{flex:0 0 150px;background:#222;border-radius:8px;padding:8px;font-size:12px}
.card .title{font-weight:600;font-size:13px;min-height:32px} .card .meta{color:#aaa}
.badge{display:inline-block;background:#c33;color:#fff;border-radius:4px;padding:0 4px;font-size:11px}
.badge.new{background:#2a7} .notice{background:#553;padding:6px 10px;border-radius:6px}
table{border-collapse:collapse;font-size:12px} td,th{padding:2px 6px;text-align:left;border-bottom:1px solid #333}
.tabs a{margin-right:10px} .tabs b{margin-right:10px}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def card(item: dict) -> str:
    """One class card; a class the catalogue lacks ("title": null) shows its id, marked (a
    cache without titles at all, older or of a dataset without them: the id, unmarked)."""
    known = item.get("title") is not None
    badges = '<span class="badge missing">not in catalogue</span>' if "title" in item and not known else ""
    if item.get("is_new"):
        badges += '<span class="badge new">new</span>'
    meta = " · ".join(_e(item[k]) + (" min" if k == "duration_min" else "")
                      for k in ("instructor", "discipline", "duration_min") if item.get(k) is not None)
    return (f'<div class="card" data-class-id="{_e(item["class_id"])}" data-rank="{_e(item["rank"])}">'
            f'<div class="title">{_e(item["title"] if known else item["class_id"])}</div>'
            f'<div class="meta">{meta}</div><div class="meta">#{_e(item["rank"])} · score '
            f'{float(item["score"]):.3f}</div>{badges}</div>')


def screen_html(platform: str, payload: dict) -> str:
    rows = "".join(
        f'<div class="row" data-row-id="{_e(r["row_id"])}"><h3>{_e(r["title"])}</h3>'
        f'<div class="cards">{"".join(card(i) for i in r["items"])}</div></div>'
        for r in payload["rows"])
    return (f'<section class="screen" data-platform="{_e(platform)}" data-source="{_e(payload.get("source"))}">'
            f'<h2>{_e(platform.capitalize())}</h2>{rows}</section>')


def _history_html(rows: list[dict]) -> str:
    if not rows:
        return "<p>No workouts in the lakehouse.</p>"
    cols = ("date", "hour", "platform", "title", "instructor", "discipline")
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="history"><tr>{head}</tr>{body}</table>'


def _favourites_html(fav: dict | None) -> str:
    if fav is None:
        return "<p>No planted truth for this user (not simulated data, or not a simulated user).</p>"
    return (f'<p class="favourites">Instructors: {_e(", ".join(fav["instructors"]) or "none")}<br>'
            f'Disciplines: {_e(", ".join(fav["disciplines"]))}</p>')


def create_preview_app(cache_dir: str | Path, source: PreviewSource | None = None) -> Starlette:
    source = source or PreviewSource()
    reader = CacheReader(cache_dir, refresh_s=0.5)

    def screens(user_id: str, model: str) -> tuple[dict[str, dict], bool]:
        """platform -> payload for the model, and whether the user is in the cache. A known user
        sees the platforms they have rows on; an unknown one every platform's popular rows."""
        hits = {}
        version = reader.version
        for platform in version.platforms if version else ():
            hit = reader.lookup(user_id, platform)
            if hit is not None:
                hits[platform] = hit
        known = any(h.personal for h in hits.values())
        if known:
            hits = {p: h for p, h in hits.items() if h.personal}
        if model == "champion" or not known:
            return {p: orjson.loads(h.body) for p, h in hits.items()}, known
        out = {}
        for platform in hits:
            payload = (source.challenger(user_id, platform) if source.challenger is not None
                       else orjson.loads(reader.popular(platform)))
            if payload is not None:
                out[platform] = payload
        return out, known

    def random_user() -> str | None:
        ids = source.users() if source.users is not None else []
        return random.choice(ids) if ids else None

    async def page(request: Request) -> Response:
        q = request.query_params
        user_id = q.get("user") or random_user() or ""
        model = q.get("model", "champion")
        if model not in MODELS:
            return HTMLResponse(f"<p>model must be one of {MODELS}, got {_e(model[:40])}</p>", 400)
        if not USER_ID.fullmatch(user_id):
            return HTMLResponse(f"<p>user must be an id (1-128 characters, no spaces or '/'), "
                                f"got {_e(user_id[:80])!s}</p>", 400)
        version = reader.version
        if version is None:
            return HTMLResponse(f"<p>No published cache under {_e(cache_dir)}.</p>", 503)
        shown, known = screens(user_id, model)
        notice = "" if known else (f'<p class="notice" id="unknown-user">{_e(user_id)} is not in the '
                                   "cache: these are the popular rows, as a new user sees them.</p>")
        other = "challenger" if model == "champion" else "champion"
        label = {"champion": f"champion (model v{version.model_version}, cache)",
                 "challenger": source.challenger_name}
        tabs = (f'<div class="tabs">Model: <b id="model">{_e(label[model])}</b>'
                f'<a id="flip" href="?user={_e(user_id)}&amp;model={other}">show the {other}: '
                f"{_e(label[other])}</a></div>")
        history = source.history(user_id, HISTORY) if source.history else []
        fav = source.favourites([user_id]).get(user_id) if source.favourites else None
        notes = "".join(f"<p>{_e(n)}</p>" for n in source.notes)
        body = (f"<h1>Home screen of <span id='user'>{_e(user_id)}</span> · serve date "
                f"{version.serve_date} · cache {_e(version.name)}</h1>{tabs}{notice}"
                f'<div class="layout"><div class="screens">'
                f'{"".join(screen_html(p, s) for p, s in shown.items()) or "<p>No rows.</p>"}</div>'
                f'<div class="side"><h2>Recent history</h2>{_history_html(history)}'
                f"<h2>True favourites (simulated)</h2>{_favourites_html(fav)}{notes}</div></div>")
        return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>Home screen "
                            f"preview: {_e(user_id)}</title><style>{_CSS}</style></head>"
                            f"<body>{body}</body></html>")

    app = Starlette(routes=[Route("/", page, methods=["GET"])])
    app.state.reader = reader
    return app


def serve(app: Starlette, host: str = "127.0.0.1", port: int = 8001) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, workers=1, log_level="warning", ws="none")
