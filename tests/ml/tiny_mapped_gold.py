"""A tiny "mapped" gold lakehouse for the `ml` tests: `build_mapped_lakehouse` writes gold Delta
tables the way the mapped dbt models define them, from a small deterministic interaction log, in
two variants:

* "rich": two platforms (ios, web), context columns ctx_network (text) / ctx_battery (numeric),
  users and items side tables (user_attr_*, item_attr_*), the user x genre affinity, the
  recent items (last_item_id, _2, _3);
* "bare": the implicit single platform "all", no context columns, no side tables.

The log (`Log`) is kept so the tests compute what the tables must hold independently.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

D = dt.date
DAYS = [D(2025, 5, 5) + dt.timedelta(days=i) for i in range(6)]  # Mon 5 .. Sat 10 May
USERS = [f"u{i:02d}" for i in range(1, 13)]
ITEMS = [f"i{i:02d}" for i in range(1, 13)]
USER_FIRST_DAY = {u: DAYS[0] for u in USERS} | {"u11": DAYS[3], "u12": DAYS[5]}
ITEM_FIRST_DAY = {i: DAYS[0] for i in ITEMS} | {"i11": DAYS[2], "i12": DAYS[5]}
NEGATIVES = 2


@dataclass
class Log:
    """The interaction log behind a lakehouse: one dict per take, in time order."""

    variant: str
    takes: list[dict] = field(default_factory=list)

    @property
    def platforms(self) -> list[str]:
        return sorted({t["platform"] for t in self.takes})

    def first_seen_on(self, item: str, platform: str) -> dt.date | None:
        days = [t["event_date"] for t in self.takes if t["item"] == item and t["platform"] == platform]
        return min(days) if days else None

    def user_takes(self, user: str, up_to: dt.date) -> list[dict]:
        return [t for t in self.takes if t["user"] == user and t["event_date"] <= up_to]


def _group(name: str) -> int:
    return int(name[1:]) % 3


def genres(item: str) -> list[str]:
    """A rich item's genres: its taste group's, and a second one for every fourth item (the
    multi-valued attribute, joined by the import's unit separator in item_attr_genre)."""
    g = _group(item)
    return [f"g{g}", f"g{(g + 1) % 3}"] if int(item[1:]) % 4 == 0 else [f"g{g}"]


def make_log(variant: str, seed: int = 7) -> Log:
    """Two takes per user and day; each user prefers the items of its taste group and takes
    them at that group's hour (8h, 13h, 21h); u01's first take on DAYS[2] is the new item i11,
    u02's on DAYS[5] the new item i12."""
    rng = random.Random(seed)
    log = Log(variant)
    for day in DAYS:
        for n, u in enumerate(USERS):
            if USER_FIRST_DAY[u] > day:
                continue
            live = [i for i in ITEMS if ITEM_FIRST_DAY[i] <= day]
            own = [i for i in live if _group(i) == _group(u)]
            for k in range(2):
                if (u, day, k) == ("u01", DAYS[2], 0):
                    item = "i11"
                elif (u, day, k) == ("u02", DAYS[5], 0):
                    item = "i12"
                else:
                    item = rng.choice(own if rng.random() < 0.8 else live)
                hour = (8, 13, 21)[_group(u)] + rng.choice((-1, 0, 0, 1))
                platform = "all" if variant == "bare" else ("ios" if (n + k) % 3 else "web")
                log.takes.append({
                    "user": u, "item": item, "event_date": day, "platform": platform,
                    "ts": dt.datetime(day.year, day.month, day.day, hour, 7 * k, tzinfo=dt.timezone.utc),
                    "hour": hour, "complete": rng.random() < 0.6, "like": rng.random() < 0.2,
                    "network": "wifi" if hour < 12 else "cell", "battery": round(rng.uniform(0.2, 1.0), 2),
                })
    log.takes.sort(key=lambda t: (t["ts"], t["user"]))
    return log


def _smooth(hits: int, n: int) -> float:
    return (hits + 1) / (n + 2)


def _usual_hour(takes: list[dict]) -> int | None:
    if not takes:
        return None
    counts = Counter(t["hour"] for t in takes)
    return min(h for h, c in counts.items() if c == max(counts.values()))


def build_mapped_lakehouse(root, variant: str = "rich", seed: int = 7) -> tuple[str, Log]:
    """Gold training_examples, user_features_daily, class_features_daily, scoring_candidates
    and (rich) user_attribute_affinity."""
    uri = str(root / f"lake-{variant}")
    rich = variant == "rich"
    log = make_log(variant, seed)
    rng = random.Random(seed + 1)

    examples = []
    for w, t in enumerate(log.takes):
        e, p = t["event_date"], t["platform"]
        ctx = {"ctx_network": t["network"], "ctx_battery": t["battery"]} if rich else {}
        available = sorted(i for i in ITEMS if i != t["item"]
                           and (log.first_seen_on(i, p) or DAYS[-1] + dt.timedelta(1)) < e)
        picks = rng.sample(available, min(NEGATIVES, len(available)))
        for s, item in enumerate([t["item"], *picks]):
            pos = s == 0
            examples.append({
                "example_id": f"w{w:05d}:{s}", "workout_id": f"w{w:05d}", "sample_index": s,
                "event_date": e, "feature_date": e - dt.timedelta(days=1), "user_id": t["user"],
                "class_id": item, "platform": p, "hour_of_day": t["hour"],
                "day_of_week": e.isoweekday(), "is_weekend": e.isoweekday() >= 6, **ctx,
                "label_take": int(pos), "label_complete": int(pos and t["complete"]),
                "label_music_like": int(pos and t["like"]), "is_negative": not pos,
            })

    fdates = [DAYS[0] - dt.timedelta(days=1), *DAYS]
    users, classes, candidates, affinity = [], [], [], []
    for f in fdates:
        for n, u in enumerate(USERS):
            if USER_FIRST_DAY[u] > f:
                continue
            h = log.user_takes(u, f)
            h28 = [t for t in h if t["event_date"] > f - dt.timedelta(days=28)]
            last = h[-1] if h else None
            row = {
                "user_id": u, "feature_date": f, "first_seen_date": USER_FIRST_DAY[u],
                "days_since_first_seen": (f - USER_FIRST_DAY[u]).days,
                "events_total": len(h),
                "events_7d": sum(t["event_date"] > f - dt.timedelta(days=7) for t in h),
                "events_28d": len(h28),
                "days_since_last_event": (f - last["event_date"]).days if last else None,
                "last_platform": last["platform"] if last else None,
                "usual_hour": _usual_hour(h),
                "complete_rate_28d": _smooth(sum(t["complete"] for t in h28), len(h28)),
                "music_likes_28d": sum(t["like"] for t in h28),
            }
            if rich and h:  # every take of the log is inside the 365-day window
                for g, k in sorted(Counter(g for t in h for g in genres(t["item"])).items()):
                    affinity.append({"feature_date": f, "user_id": u, "attribute": "item_attr_genre",
                                     "value": g, "takes": k, "share": k / len(h)})
            if rich:  # recent state: the last three takes of the latest day with one
                latest = sorted((t for t in h if last and t["event_date"] == last["event_date"]),
                                key=lambda t: t["ts"], reverse=True)
                row |= {name: latest[k]["item"] if k < len(latest) else None
                        for k, name in enumerate(("last_item_id", "last_item_id_2", "last_item_id_3"))}
                row |= {"last_ctx_network": last["network"] if last else None,
                        "last_ctx_battery": last["battery"] if last else None,
                        "user_attr_country": ("DE", "FR", "US")[n % 3],
                        "user_attr_age": float(20 + n)}
            users.append(row)
        for n, i in enumerate(ITEMS):
            seen = [t for t in log.takes if t["item"] == i and t["event_date"] <= f]
            if not seen:
                continue
            release = min(t["event_date"] for t in seen)
            row = {
                "class_id": i, "feature_date": f, "release_date": release,
                "age_days": (f - release).days,
                "events_1d": sum(t["event_date"] == f for t in seen),
                "events_7d": sum(t["event_date"] > f - dt.timedelta(days=7) for t in seen),
                "events_28d": sum(t["event_date"] > f - dt.timedelta(days=28) for t in seen),
                "events_total": len(seen),
                "complete_rate": _smooth(sum(t["complete"] for t in seen), len(seen)),
                "music_like_rate": _smooth(sum(t["like"] for t in seen), len(seen)),
            }
            if rich:
                row |= {"item_attr_genre": "\x1f".join(genres(i)), "item_attr_duration_s": 120.0 + 10 * n}
            classes.append(row)
        for p in log.platforms:
            for i in ITEMS:
                first = log.first_seen_on(i, p)
                if first is not None and first <= f:
                    candidates.append({"feature_date": f, "serve_date": f + dt.timedelta(days=1),
                                       "platform": p, "class_id": i})

    def write(rows, name, part, schema=None):
        df = pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None)
        df.write_delta(f"{uri}/gold/{name}", delta_write_options={"partition_by": [part]})

    write(examples, "training_examples", "event_date",
          {"ctx_network": pl.Utf8, "ctx_battery": pl.Float64} if rich else None)
    write(users, "user_features_daily", "feature_date",
          {"days_since_last_event": pl.Int64, "last_platform": pl.Utf8, "usual_hour": pl.Int64,
           **({"last_ctx_network": pl.Utf8, "last_ctx_battery": pl.Float64, "last_item_id": pl.Utf8,
               "last_item_id_2": pl.Utf8, "last_item_id_3": pl.Utf8} if rich else {})})
    write(classes, "class_features_daily", "feature_date")
    write(candidates, "scoring_candidates", "feature_date")
    if rich:  # the user x genre affinity (a bare lakehouse has no categorical item attribute)
        write(affinity, "user_attribute_affinity", "feature_date", {"takes": pl.Int32})
    return uri, log
