"""Example external data for "bring your own data": a music-listening service's export.

Deliberately shaped unlike the fitness landing contract, so that the mapping file (not code)
adapts it to the lakehouse (examples/listening/mapping.yaml)::

    <out>/events/part-000.csv ...   listener, track, ts (epoch ms), action, device, network, battery
    <out>/users.jsonl               listener_id, country, plan, age (age sometimes null)
    <out>/tracks.parquet            track_id, genre, artist, duration_s
    <out>/ratings.csv               user, movie, stars (1-5), rated_at ("%d/%m/%Y %H:%M", UTC)
                                    (only with ratings=True; examples/listening/ratings_mapping.yaml)

There is structure for a model to find, beyond popularity: listeners have latent genre tastes
(shaped by their country and age), tracks have power-law popularity and release over time
(new tracks get a novelty boost), and the moment shifts the genres played (desktop in office
hours -> electronic/ambient/classical, speaker in the evening -> jazz/latin, night -> ambient).
Each play ends in a full_listen or a skip, with a probability that rises with the listener's
taste for the genre and falls on a low battery or a cellular network; likes follow full
listens. About 3% of listeners are missing from users.jsonl (as in real exports).

Deterministic for a seed; numpy only (plus pyarrow/polars for writing).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

GENRES = ("pop", "rock", "hiphop", "electronic", "jazz", "classical", "ambient", "metal", "folk", "latin")
GENRE_WEIGHTS = (3, 2, 2, 2, 1, 1, 1, 1, 1, 1)  # share of the catalogue
DEVICES = ("phone", "desktop", "speaker")
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "JP")
COUNTRY_WEIGHTS = (0.35, 0.15, 0.15, 0.12, 0.13, 0.10)
MOVIE_GENRES = ("drama", "comedy", "action", "thriller", "romance", "scifi", "documentary", "animation")
ACTIONS = ("play", "full_listen", "like", "skip")
MISSING_USER_SHARE = 0.03

Log = Callable[[str], None] | None


@dataclass(frozen=True)
class ExternalConfig:
    days: int = 30
    start_date: date = date(2026, 9, 1)
    seed: int = 7
    users: int = 400
    items: int = 300
    ratings: bool = False
    files: int = 3  # events are split by day range into this many CSV files

    def replace(self, **kw) -> "ExternalConfig":
        return replace(self, **kw)


def _g(name: str) -> int:
    return GENRES.index(name)


def _context_shift(rng: np.random.Generator) -> np.ndarray:
    """Genre log-weight shift by (device, time of day bucket): night, morning, afternoon, evening."""
    shift = rng.normal(0.0, 0.15, size=(len(DEVICES), 4, len(GENRES)))
    phone, desktop, speaker = range(3)
    night, morning, afternoon, evening = range(4)
    for g in ("pop", "hiphop"):
        shift[phone, :, _g(g)] += 0.7
    for g in ("rock", "pop"):
        shift[phone, morning, _g(g)] += 0.6  # commute
    for g in ("electronic", "ambient", "classical"):
        shift[desktop, morning, _g(g)] += 1.2  # focus music in office hours
        shift[desktop, afternoon, _g(g)] += 1.2
    for g in ("jazz", "classical", "folk"):
        shift[speaker, :, _g(g)] += 0.8
    for g in ("latin", "pop"):
        shift[speaker, evening, _g(g)] += 0.9  # evenings at home
    shift[:, night, _g("ambient")] += 1.5
    shift[:, night, _g("classical")] += 0.8
    shift[:, night, _g("metal")] -= 0.8
    shift[:, night, _g("hiphop")] -= 0.6
    return shift


def _hour_profiles() -> np.ndarray:
    """P(hour | device): phone around commutes and lunch, desktop in office hours, speaker evenings."""
    h = np.arange(24)

    def bumps(*peaks):
        return 0.02 + sum(w * np.exp(-0.5 * ((h - c) / s) ** 2) for c, s, w in peaks)

    prof = np.stack([bumps((8, 1.2, 1.0), (12.5, 1.0, 0.5), (18, 1.5, 1.0), (22, 1.5, 0.4)),
                     bumps((10, 1.5, 1.0), (14.5, 2.0, 1.0)),
                     bumps((7.5, 1.0, 0.4), (20, 2.0, 1.0), (23, 1.0, 0.4))])
    return prof / prof.sum(axis=1, keepdims=True)


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of `probs` (rows need not be normalised)."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class _World:
    country: np.ndarray
    age: np.ndarray
    premium: np.ndarray
    taste: np.ndarray  # users x genres, rows sum to 1
    device_pref: np.ndarray  # users x devices
    activity: np.ndarray  # mean sessions per day
    start_day: np.ndarray  # first day a listener may be active
    in_users_file: np.ndarray
    genre: np.ndarray  # per track
    artist: np.ndarray
    duration: np.ndarray
    log_pop: np.ndarray
    release_day: np.ndarray  # negative: in the catalogue before the window
    user_track: np.ndarray  # idiosyncratic listener x track affinity
    ctx: np.ndarray


def _world(cfg: ExternalConfig, rng: np.random.Generator) -> _World:
    U, I, G = cfg.users, cfg.items, len(GENRES)
    country_pref = rng.dirichlet(np.full(G, 0.8), size=len(COUNTRIES))
    country = rng.choice(len(COUNTRIES), size=U, p=np.array(COUNTRY_WEIGHTS))
    age = np.clip(np.round(rng.normal(33, 11, U)), 16, 75).astype(int)
    premium = rng.random(U) < 0.35
    alpha = 0.15 + 2.0 * country_pref[country]
    old, young = age >= 45, age < 25
    for g in ("jazz", "classical", "folk"):
        alpha[old, _g(g)] += 0.8
    for g in ("hiphop", "electronic"):
        alpha[young, _g(g)] += 0.8
    taste = np.stack([rng.dirichlet(a) for a in alpha])
    device_pref = rng.dirichlet(np.array([3.0, 1.5, 1.0]), size=U)
    activity = np.exp(rng.normal(-0.4, 0.6, U)) * np.where(premium, 1.3, 1.0)
    start_day = np.where(rng.random(U) < 0.75, 0, rng.integers(0, max(cfg.days, 1), U))
    in_users_file = rng.random(U) >= MISSING_USER_SHARE

    genre = rng.choice(G, size=I, p=np.array(GENRE_WEIGHTS) / sum(GENRE_WEIGHTS))
    n_artists = max(G, I // 5)
    artist_genre = np.concatenate([np.arange(G), rng.choice(G, size=n_artists - G)])
    artist = np.empty(I, dtype=int)
    for g in range(G):  # a track's artist plays its genre; some artists are much bigger
        members = np.flatnonzero(artist_genre == g)
        w = 1.0 / np.arange(1, len(members) + 1)
        idx = np.flatnonzero(genre == g)
        artist[idx] = rng.choice(members, size=len(idx), p=w / w.sum())
    base = np.where(genre == _g("classical"), 330.0, np.where(genre == _g("ambient"), 300.0, 215.0))
    duration = np.round(np.clip(base * rng.lognormal(0.0, 0.2, I), 60.0, 900.0), 1)
    log_pop = -0.9 * np.log(rng.permutation(I) + 1.0)  # Zipf over a random order
    release_day = np.where(rng.random(I) < 0.65, -rng.integers(1, 400, I),
                           rng.integers(1, max(cfg.days, 2), I))
    user_track = rng.normal(0.0, 0.5, size=(U, I))
    return _World(country, age, premium, taste, device_pref, activity, start_day, in_users_file,
                  genre, artist, duration, log_pop, release_day, user_track, _context_shift(rng))


def _day_events(w: _World, d: int, day_ms: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    hours = _hour_profiles()
    active = np.flatnonzero(w.start_day <= d)
    su = np.repeat(active, rng.poisson(w.activity[active]))  # one entry per session
    S = len(su)
    if S == 0:
        return {}
    dev = _pick(rng, w.device_pref[su])
    hour = _pick(rng, hours[dev])
    tod = hour // 6
    cellular = (dev == 0) & (rng.random(S) < np.where((tod == 1) | (tod == 2), 0.55, 0.25))
    battery = np.where(dev == 0, rng.uniform(3, 100, S), np.where(dev == 1, rng.uniform(20, 100, S), 100.0))
    battery = np.round(battery, 1)
    start_s = hour * 3600 + rng.integers(0, 3600, S)

    novelty = np.where(w.release_day <= d, 1.2 * np.exp(-np.clip(d - w.release_day, 0, None) / 5.0), 0.0)
    log_taste = np.log(w.taste + 0.01)
    score = (2.0 * log_taste[su][:, w.genre] + w.ctx[dev, tod][:, w.genre] + 0.8 * w.log_pop
             + novelty + w.user_track[su])
    score[:, w.release_day > d] = -np.inf
    probs = np.exp(score - score.max(axis=1, keepdims=True))

    n_plays = 1 + rng.poisson(3.0, S)
    ps = np.repeat(np.arange(S), n_plays)  # session of each play
    item = _pick(rng, probs[ps])
    user = su[ps]
    g = w.genre[item]
    aff = (np.log(w.taste[user, g] * len(GENRES)) + 0.5 * w.ctx[dev[ps], tod[ps], g]
           + w.user_track[user, item])
    low_batt = battery[ps] < 20
    p_full = _sigmoid(-0.2 + 0.9 * aff - 1.3 * low_batt - 0.4 * cellular[ps])
    full = rng.random(len(ps)) < p_full
    like = full & (rng.random(len(ps)) < _sigmoid(-3.0 + 1.1 * aff + 0.4 * w.premium[user]))
    skip_after = rng.uniform(5, 60, len(ps))
    length = np.where(full, w.duration[item], skip_after) + rng.uniform(0, 3, len(ps))
    ends = np.cumsum(length)
    first = np.r_[0, np.cumsum(n_plays)[:-1]]
    offset = ends - length - np.repeat((ends - length)[first], n_plays)  # seconds into the session
    t_play = day_ms + ((start_s[ps] + offset) * 1000).astype(np.int64)

    def rows(mask, ts, action):
        idx = np.flatnonzero(mask)
        return dict(listener=user[idx], track=item[idx], ts=ts[idx], action=np.full(len(idx), action),
                    device=dev[ps][idx], network=cellular[ps][idx], battery=battery[ps][idx])

    t_end = t_play + (np.where(full, w.duration[item], skip_after) * 1000).astype(np.int64)
    parts = [rows(np.ones(len(ps), bool), t_play, ACTIONS.index("play")),
             rows(full, t_end, ACTIONS.index("full_listen")),
             rows(like, t_end + 2000, ACTIONS.index("like")),
             rows(~full, t_end, ACTIONS.index("skip"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _ratings(cfg: ExternalConfig, w: _World, rng: np.random.Generator, start_ms: int) -> pl.DataFrame:
    """Explicit 1-5 star ratings of movie-like items by the same listeners: stars follow a movie
    taste derived from the music taste (so user attributes carry over), plus noise."""
    MG, M = len(MOVIE_GENRES), cfg.items
    proj = rng.dirichlet(np.full(MG, 0.5), size=len(GENRES))
    mtaste = w.taste @ proj  # users x movie genres
    mgenre = rng.integers(0, MG, M)
    mpop = -0.8 * np.log(rng.permutation(M) + 1.0)
    quality = rng.normal(0, 0.5, M)
    rows = []
    for d in range(cfg.days):
        active = np.flatnonzero(w.start_day <= d)
        ru = np.repeat(active, rng.poisson(0.35 * w.activity[active]))
        if not len(ru):
            continue
        score = 1.5 * np.log(mtaste[ru][:, mgenre] + 0.01) + mpop
        movie = _pick(rng, np.exp(score - score.max(axis=1, keepdims=True)))
        aff = np.log(mtaste[ru, mgenre[movie]] * MG) + quality[movie]
        stars = np.clip(np.round(3.2 + 1.1 * aff + rng.normal(0, 0.7, len(ru))), 1, 5).astype(int)
        ts = start_ms + d * 86_400_000 + rng.integers(6 * 3600, 24 * 3600, len(ru)) * 1000
        rows.append(pl.DataFrame({"u": ru, "m": movie, "stars": stars, "ts": ts}))
    df = pl.concat(rows).sort("ts", "u", "m", maintain_order=True)
    return df.select(
        user=pl.format("L{}", pl.col("u").cast(pl.String).str.zfill(5)),
        movie=pl.format("M{}", pl.col("m").cast(pl.String).str.zfill(5)),
        stars=pl.col("stars"),
        rated_at=pl.from_epoch("ts", time_unit="ms").dt.strftime("%d/%m/%Y %H:%M"),
    )


def generate_external(out: str | os.PathLike, cfg: ExternalConfig = ExternalConfig(), log: Log = None) -> dict:
    """Write the example dataset under the local folder `out`; returns counts per file."""
    log = log or (lambda _m: None)
    rng = np.random.default_rng(cfg.seed)
    w = _world(cfg, rng)
    start_ms = int(datetime.combine(cfg.start_date, datetime.min.time(), tzinfo=timezone.utc).timestamp() * 1000)
    end_ms = start_ms + cfg.days * 86_400_000

    days = []
    for d in range(cfg.days):
        ev = _day_events(w, d, start_ms + d * 86_400_000, rng)
        if ev:
            days.append(pl.DataFrame({**ev, "day": np.full(len(ev["ts"]), d)}))
    events = (pl.concat(days).filter(pl.col("ts") < end_ms)  # the export's cut-off
              .sort("ts", "listener", "action", maintain_order=True))
    uid = lambda c, p: pl.format(p + "{}", pl.col(c).cast(pl.String).str.zfill(5))  # noqa: E731
    table = events.select(
        "day",
        listener=uid("listener", "L"),
        track=uid("track", "T"),
        ts=pl.col("ts"),
        action=pl.col("action").replace_strict(list(range(len(ACTIONS))), list(ACTIONS), return_dtype=pl.String),
        device=pl.col("device").replace_strict(list(range(len(DEVICES))), list(DEVICES), return_dtype=pl.String),
        network=pl.when(pl.col("network")).then(pl.lit("cellular")).otherwise(pl.lit("wifi")),
        battery=pl.col("battery"),
    )

    root = Path(out)
    ev_dir = root / "events"
    ev_dir.mkdir(parents=True, exist_ok=True)
    for old in ev_dir.glob("part-*.csv"):  # a re-run with fewer files must not leave stale parts
        old.unlink()
    n_files = max(1, min(cfg.files, cfg.days))
    counts: dict[str, int] = {}
    for k in range(n_files):
        lo, hi = k * cfg.days // n_files, (k + 1) * cfg.days // n_files
        part = table.filter((pl.col("day") >= lo) & (pl.col("day") < hi)).drop("day")
        name = f"events/part-{k:03d}.csv"
        part.write_csv(root / name)
        counts[name] = part.height

    with open(root / "users.jsonl", "w", encoding="utf-8") as f:
        n = 0
        for u in np.flatnonzero(w.in_users_file):
            age = None if rng.random() < 0.05 else int(w.age[u])
            f.write(json.dumps({"listener_id": f"L{u:05d}", "country": COUNTRIES[w.country[u]],
                                "plan": "premium" if w.premium[u] else "free", "age": age}) + "\n")
            n += 1
        counts["users.jsonl"] = n

    tracks = pl.DataFrame({
        "track_id": [f"T{i:05d}" for i in range(cfg.items)],
        "genre": [GENRES[g] for g in w.genre],
        "artist": [f"artist_{a:03d}" for a in w.artist],
        "duration_s": w.duration.astype(float),
    })
    tracks.write_parquet(root / "tracks.parquet", statistics=False)
    counts["tracks.parquet"] = tracks.height

    if cfg.ratings:
        ratings = _ratings(cfg, w, rng, start_ms)
        ratings.write_csv(root / "ratings.csv")
        counts["ratings.csv"] = ratings.height
    by_action = dict(table.group_by("action").len().sort("action").iter_rows())
    log(f"[external] wrote {sum(v for k, v in counts.items() if k.startswith('events/'))} events "
        f"({', '.join(f'{a}={n}' for a, n in by_action.items())}) in {n_files} file(s), "
        f"{counts['users.jsonl']} users, {counts['tracks.parquet']} tracks"
        + (f", {counts['ratings.csv']} ratings" if cfg.ratings else "") + f" -> {root}")
    return {"files": counts, "actions": by_action, "days": cfg.days, "start_date": cfg.start_date.isoformat()}


__all__ = ["ACTIONS", "DEVICES", "ExternalConfig", "GENRES", "generate_external"]
