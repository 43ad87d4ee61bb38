"""A "mapped" dataset's gold tables (contract sections 3 and 4): the spec, the encoders, the reader.

`build_mapped_lakehouse` writes tiny gold Delta tables the way the mapped dbt models define them,
from a small deterministic interaction log, in two variants:

* "rich": two platforms (ios, web), context columns ctx_network (text) / ctx_battery (numeric),
  users and items side tables (user_attr_*, item_attr_*);
* "bare": the implicit single platform "all", no context columns, no side tables.

The log (`Log`) is kept so the tests compute what the tables must hold independently.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from dataclasses import dataclass, field

import polars as pl
import pytest

from ml.features import (
    CLASS_PREFIX,
    Encoders,
    FeatureSpec,
    default_spec,
    mapped_spec,
    prepare,
    with_context,
)
from ml.gold_reader import mapped_spec_from_gold, read_examples

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
    """Gold training_examples, user_features_daily, class_features_daily, scoring_candidates."""
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
    users, classes, candidates = [], [], []
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
            if rich:
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
                row |= {"item_attr_genre": f"g{_group(i)}", "item_attr_duration_s": 120.0 + 10 * n}
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
           **({"last_ctx_network": pl.Utf8, "last_ctx_battery": pl.Float64} if rich else {})})
    write(classes, "class_features_daily", "feature_date")
    write(candidates, "scoring_candidates", "feature_date")
    return uri, log


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    return build_mapped_lakehouse(tmp_path_factory.mktemp("mapped"), "rich")


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    return build_mapped_lakehouse(tmp_path_factory.mktemp("mapped"), "bare")


# ---------------------------------------------------------------------------------------------
# the spec


def test_rich_spec_has_context_attributes_and_both_sides(rich):
    uri, _ = rich
    spec = mapped_spec_from_gold(uri)
    assert spec.dataset == "mapped"
    assert spec.sparse == ["last_platform", "last_ctx_network", "user_attr_country",
                           "item_attr_genre", "platform", "hour_of_day", "day_of_week", "ctx_network"]
    assert spec.dense == [
        "events_total", "events_7d", "events_28d", "music_likes_28d", "complete_rate_28d",
        "days_since_first_seen", "user_is_cold", "days_since_last_event", "never_active",
        "last_ctx_battery", "user_attr_age",
        "class_events_1d", "class_events_7d", "class_events_28d", "class_events_total",
        "class_complete_rate", "class_music_like_rate", "class_age_days", "class_is_new",
        "item_attr_duration_s", "is_weekend", "hour_gap_usual", "ctx_battery",
    ]
    assert spec.context_features == {"platform", "hour_of_day", "day_of_week", "is_weekend",
                                     "hour_gap_usual", "ctx_network", "ctx_battery"}
    assert {"events_total", "class_events_total", "class_age_days"} <= spec.log1p
    assert spec.fill_null["days_since_last_event"] == 3650.0
    # nothing of the fitness spec leaks in
    assert not set(spec.sparse + spec.dense) & {"discipline", "instructor_id", "workouts_total",
                                                "user_instructor_share", "prev_discipline"}


def test_bare_spec_is_time_of_event_context_only(bare):
    uri, _ = bare
    spec = mapped_spec_from_gold(uri)
    assert spec.sparse == ["last_platform", "platform", "hour_of_day", "day_of_week"]
    assert not [c for c in spec.sparse + spec.dense if "attr_" in c or "ctx_" in c]
    assert spec.context_features == {"platform", "hour_of_day", "day_of_week", "is_weekend",
                                     "hour_gap_usual"}
    ablation = with_context(spec, False)
    assert ablation.dataset == "mapped"
    assert ablation.sparse == ["last_platform"]
    assert "is_weekend" not in ablation.dense and "hour_gap_usual" not in ablation.dense
    assert ablation.dense == [c for c in spec.dense if c not in ("is_weekend", "hour_gap_usual")]


def test_ablation_of_the_rich_spec_drops_every_context_column(rich):
    spec = with_context(mapped_spec_from_gold(rich[0]), False)
    assert spec.sparse == ["last_platform", "last_ctx_network", "user_attr_country", "item_attr_genre"]
    assert not {"platform", "hour_of_day", "day_of_week", "is_weekend", "hour_gap_usual",
                "ctx_network", "ctx_battery"} & set(spec.sparse + spec.dense)
    # the user's last context is the user's state, not the moment's: it stays
    assert "last_ctx_battery" in spec.dense


def test_mapped_spec_from_plain_column_types():
    spec = mapped_spec({"events_total": "int64", "last_platform": "string", "user_attr_tier": "string"},
                       {"events_total": "int64", "item_attr_len": "double"},
                       {"platform": "string", "hour_of_day": "int32", "ctx_speed": "float64",
                        "ctx_when": "timestamp[us]"}, include_ids=True)
    assert spec.sparse == ["last_platform", "user_attr_tier", "platform", "hour_of_day"]  # no ids in
    assert spec.dense == ["events_total", "class_events_total", "class_is_new", "item_attr_len",
                          "ctx_speed"]
    assert "ctx_when" in spec.context_features and "ctx_when" not in spec.dense  # not a feature type
    with pytest.raises(TypeError, match="mapping"):
        mapped_spec(["events_total"], {}, {})


def test_dataset_travels_with_the_encoders_and_old_json_is_fitness(rich):
    uri, _ = rich
    frame = read_examples(uri, dataset="mapped").collect()
    enc = Encoders.fit(frame, mapped_spec_from_gold(uri))
    back = Encoders.from_json(enc.to_json())
    assert back.spec.dataset == "mapped" and back.spec == enc.spec
    old = json.loads(enc.to_json())
    del old["spec"]["dataset"]  # a spec saved before datasets existed
    assert Encoders.from_json(json.dumps(old)).spec.dataset == "fitness"
    assert default_spec().dataset == "fitness"
    with pytest.raises(ValueError, match="dataset"):
        FeatureSpec(sparse=[], dense=[], dataset="music")


# ---------------------------------------------------------------------------------------------
# the reader


def test_read_examples_joins_point_in_time(rich):
    uri, log = rich
    df = read_examples(uri, dataset="mapped").collect()
    assert df.height == pl.read_delta(f"{uri}/gold/training_examples").height
    pos = df.filter(pl.col("label_take") == 1)
    # a user's features are those of the day before: takes strictly before the event day
    for u, e in (("u03", DAYS[1]), ("u05", DAYS[4]), ("u10", DAYS[5])):
        before = log.user_takes(u, e - dt.timedelta(days=1))
        got = pos.filter((pl.col("user_id") == u) & (pl.col("event_date") == e))
        assert set(got["events_total"]) == {len(before)}
        assert set(got["last_ctx_network"]) == {before[-1]["network"]}
        assert set(got["usual_hour"]) == {_usual_hour(before)}
    # an item's popularity is of the day before; its static columns are there on any day
    i3 = df.filter((pl.col("class_id") == "i03") & (pl.col("event_date") == DAYS[3]))
    n_before = sum(t["item"] == "i03" and t["event_date"] < DAYS[3] for t in log.takes)
    assert set(i3[CLASS_PREFIX + "events_total"]) == {n_before}
    assert set(i3["item_attr_genre"]) == {"g0"} and set(i3["release_date"]) == {DAYS[0]}
    assert "instructor_id" not in df.columns and "user_instructor_share" not in df.columns


def test_cold_user_and_new_item_are_left_joined(rich):
    uri, _ = rich
    df = read_examples(uri, start=DAYS[2], end=DAYS[3], dataset="mapped").collect()
    u11 = df.filter((pl.col("user_id") == "u11") & (pl.col("event_date") == DAYS[3]))
    assert u11.height > 0 and u11["events_total"].null_count() == u11.height  # first seen that day
    new = df.filter((pl.col("class_id") == "i11") & (pl.col("event_date") == DAYS[2]))
    assert new.height >= 1 and new[CLASS_PREFIX + "events_total"].null_count() == new.height
    assert set(new["release_date"]) == {DAYS[2]}  # static, from class_features_daily
    enc = Encoders.fit(df, mapped_spec_from_gold(uri))
    p = prepare(df)
    assert set(p.filter(pl.col("user_id") == "u11")["user_is_cold"]) >= {1.0}
    assert set(p.filter(pl.col("class_id") == "i11")["class_is_new"]) >= {1.0}
    batch = enc.transform(df)
    assert batch.dense.isfinite().all() and len(batch) == df.height


def test_prepare_derives_the_hour_gap_circularly(rich):
    uri, _ = rich
    df = prepare(read_examples(uri, start=DAYS[5], end=DAYS[5], dataset="mapped").collect())
    row = df.filter(pl.col("usual_hour").is_not_null()).row(0, named=True)
    d = abs(row["hour_of_day"] - row["usual_hour"]) % 24
    assert row["hour_gap_usual"] == min(d, 24 - d)
    f = prepare(pl.DataFrame({"hour_of_day": [23, 1, None], "usual_hour": [1, 23, 5]}))
    assert f["hour_gap_usual"].to_list() == [2.0, 2.0, None]


def test_fitness_prepare_is_unchanged_by_the_mapped_derivations():
    f = pl.DataFrame({"days_since_signup": [None, 3], "class_workouts_total": [None, 2],
                      "usual_hour_bike": [7.0, None], "platform": ["bike", "bike"], "hour_of_day": [9, 9]})
    out = prepare(f)
    assert out["user_is_cold"].to_list() == [1.0, 0.0]
    assert out["class_is_new"].to_list() == [1.0, 0.0]
    assert out["hour_gap_usual"].to_list() == [2.0, None]
    assert "never_active" not in out.columns


def test_bare_reader_has_no_ctx_or_attr_columns(bare):
    uri, _ = bare
    df = read_examples(uri, dataset="mapped").collect()
    assert not [c for c in df.columns if "attr_" in c or "ctx_" in c]
    assert set(df["platform"]) == {"all"}
    enc = Encoders.fit(df, mapped_spec_from_gold(uri))
    assert enc.vocab["platform"] == ["all"]  # a constant feature
