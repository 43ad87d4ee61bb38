"""ml.gold_reader on a tiny Delta lakehouse built in tmp_path: point in time, cold start, sampling."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import torch

from ml.features import CLASS_PREFIX, Encoders, default_spec
from ml.gold_reader import iter_batches, read_examples, table_versions, user_kept

D = dt.date
E1, E2, E3 = D(2025, 3, 2), D(2025, 3, 3), D(2025, 3, 4)  # event dates
DISC = ("cycling", "running", "walking", "strength", "yoga", "stretching", "meditation",
        "cardio", "pilates")
USERS = [f"u{i}" for i in range(1, 41)]  # u2 signs up on E2 (cold start there)
CLASSES = {  # class_id -> (instructor, discipline, equipment, release date)
    "c1": ("i1", "cycling", "bike", D(2025, 1, 1)),
    "c2": ("i2", "yoga", "none", D(2025, 1, 1)),
    "c3": ("i1", "running", "tread", E2),  # released on event day E2
}


def _user_row(user: str, fdate: dt.date, workouts_total: int) -> dict:
    row = {
        "user_id": user, "feature_date": fdate, "fitness_level": "beginner", "birth_year": 1990,
        "gender": "f", "country": "US", "owns_bike": True, "owns_tread": False,
        "signup_date": D(2025, 1, 1), "days_since_signup": (fdate - D(2025, 1, 1)).days,
        "workouts_total": workouts_total, "workouts_7d": 1, "workouts_28d": 2,
        "minutes_7d": 20.0, "minutes_28d": 40.0, "completion_rate_28d": 0.8,
        "days_since_last_workout": 1, "last_discipline": "cycling", "last_body_focus": "lower",
        "last_duration_min": 20, "last_platform": "bike", "last_instructor_id": "i1",
        "last_workout_date": fdate, "top_instructor_id": "i1", "top_instructor_share": 0.5,
        "top_discipline": "cycling",
        **{f"share_{d}": (1.0 if d == "cycling" else 0.0) for d in DISC},
        "usual_hour_bike": 7.0, "usual_hour_tread": None, "usual_hour_app": None,
        "session_minutes_weekday": 30.0, "session_minutes_weekend": None,
        "music_likes_total": 1, "music_likes_28d": 1, "bookmarks_total": 0, "bookmarks_28d": 0,
    }
    return row


def _class_row(cid: str, fdate: dt.date, workouts_total: int) -> dict:
    inst, disc, equip, rel = CLASSES[cid]
    return {
        "class_id": cid, "feature_date": fdate, "instructor_id": inst, "discipline": disc,
        "equipment": equip, "duration_min": 20, "difficulty": 5.0, "body_focus": "lower",
        "music_genre": "pop", "release_date": rel, "age_days": (fdate - rel).days,
        "workouts_1d": 1, "workouts_7d": 2, "workouts_28d": 3, "workouts_total": workouts_total,
        "completion_rate": 0.7, "music_like_rate": 0.1, "bookmarks_7d": 0, "impressions_7d": 10,
        "take_rate_7d": 0.2,
    }


def build_lakehouse(root) -> str:
    """Gold + bronze classes. Feature rows carry workouts_total = 100 * day + n (which row joined)
    and there IS a row for feature_date = event_date (must never be used)."""
    uri = str(root / "lake")
    fdates = [E1 - dt.timedelta(days=1), E1, E2, E3]  # up to E3 = an event date: the leak row
    users = []
    for k, f in enumerate(fdates):
        for n, u in enumerate(USERS):
            if u == "u2" and f < E2:  # u2 signed up on E2: no row for E2 - 1
                continue
            users.append(_user_row(u, f, 100 * k + n))
    classes = []
    for k, f in enumerate(fdates):
        for n, c in enumerate(CLASSES):
            if CLASSES[c][3] <= f:
                classes.append(_class_row(c, f, 100 * k + n))
    examples = []
    for e in (E1, E2, E3):
        for u in USERS:
            if u == "u2" and e < E2:
                continue
            wid = f"w-{u}-{e.isoformat()}"
            for s, c in enumerate(["c1", "c2"] + (["c3"] if e >= E2 else [])):
                examples.append({
                    "example_id": f"{wid}:{s}", "workout_id": wid, "sample_index": s,
                    "event_date": e, "feature_date": e - dt.timedelta(days=1), "user_id": u,
                    "class_id": c, "platform": "bike", "hour_of_day": 7,
                    "day_of_week": e.isoweekday(), "is_weekend": e.isoweekday() >= 6,
                    "prev_discipline": None, "prev_body_focus": None, "prev_duration_min": None,
                    "minutes_since_prev": None, "position_in_session": 1,
                    "label_take": int(s == 0), "label_complete": int(s == 0),
                    "label_music_like": 0, "is_negative": s != 0,
                })
    bronze = []
    for c, (inst, disc, equip, rel) in CLASSES.items():
        bronze.append({
            "class_id": c, "title": c, "instructor_id": inst, "discipline": disc,
            "equipment": equip, "duration_min": 20, "difficulty": 5.0, "body_focus": "lower",
            "music_genre": "old" if c == "c1" else "pop",
            "release_ts": dt.datetime(rel.year, rel.month, rel.day, 6, tzinfo=dt.timezone.utc),
            "landing_date": rel, "_ingested_at": dt.datetime(2025, 3, 5, tzinfo=dt.timezone.utc),
        })
    # c1 re-sent later with a new genre: the latest landing wins
    bronze.append({**bronze[0], "music_genre": "rock", "landing_date": D(2025, 2, 1)})

    def write(rows, layer, name, part):
        df = pl.DataFrame(rows, infer_schema_length=None)
        nulls = {"prev_discipline": pl.Utf8, "prev_body_focus": pl.Utf8}
        df = df.with_columns(pl.col(c).cast(nulls.get(c, pl.Float64))
                             for c, t in df.schema.items() if t == pl.Null)
        df.write_delta(
            f"{uri}/{layer}/{name}", delta_write_options={"partition_by": [part]})

    write(users, "gold", "user_features_daily", "feature_date")
    write(classes, "gold", "class_features_daily", "feature_date")
    write(examples, "gold", "training_examples", "event_date")
    write(bronze, "bronze", "classes", "landing_date")
    return uri


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_lakehouse(tmp_path_factory.mktemp("gold"))


def test_point_in_time_join_uses_previous_day_only(lake):
    df = read_examples(lake).collect()
    assert df.height == 39 * 2 + 40 * 3 + 40 * 3  # E1: u2 not signed up, c3 not released
    # u1 is user n=0; day index k of feature_date: E1-1 -> 0, E1 -> 1, E2 -> 2, E3 -> 3
    u1 = df.filter(pl.col("user_id") == "u1").select("event_date", "workouts_total").unique()
    got = dict(zip(u1["event_date"].to_list(), u1["workouts_total"].to_list()))
    assert got == {E1: 0, E2: 100, E3: 200}  # never 100*(k of event_date) = the same-day row
    c1 = df.filter(pl.col("class_id") == "c1").select("event_date", CLASS_PREFIX + "workouts_total").unique()
    assert dict(zip(c1["event_date"].to_list(), c1[CLASS_PREFIX + "workouts_total"].to_list())) == {
        E1: 0, E2: 100, E3: 200}


def test_cold_start_user_and_new_class_are_left_joined(lake):
    df = read_examples(lake, start=E2, end=E2).collect()
    assert set(df["event_date"].unique().to_list()) == {E2}
    u2 = df.filter(pl.col("user_id") == "u2")
    assert u2.height == 3  # kept, not dropped by an inner join
    assert u2["workouts_total"].null_count() == 3 and u2["fitness_level"].null_count() == 3
    c3 = df.filter(pl.col("class_id") == "c3")
    assert c3.height == 40
    assert c3[CLASS_PREFIX + "workouts_total"].null_count() == 40  # no row for E2 - 1
    # static metadata from bronze, so the new class still has it
    assert set(c3["discipline"].to_list()) == {"running"} and set(c3["instructor_id"].to_list()) == {"i1"}
    assert c3["release_date"].to_list()[0] == E2
    # latest landing of a re-sent class wins
    assert set(df.filter(pl.col("class_id") == "c1")["music_genre"].to_list()) == {"rock"}

    # the encoders turn those nulls into usable features: counts 0, flags set, finite
    enc = Encoders.fit(df, default_spec())
    b = enc.transform(u2)
    assert torch.isfinite(b.dense).all()
    cold = enc.spec.dense.index("user_is_cold")
    new = enc.spec.dense.index("class_is_new")
    raw_cold = b.dense[:, cold] * enc.std["user_is_cold"] + enc.mean["user_is_cold"]
    assert torch.allclose(raw_cold, torch.ones(3))
    bc3 = enc.transform(c3)
    raw_new = bc3.dense[:, new] * enc.std["class_is_new"] + enc.mean["class_is_new"]
    assert torch.allclose(raw_new, torch.ones(40))


def test_downsampling_is_deterministic_and_user_level(lake):
    a = read_examples(lake, sample_fraction=0.5, seed=7).collect()
    b = read_examples(lake, sample_fraction=0.5, seed=7).collect()
    assert a.sort("example_id").equals(b.sort("example_id"))
    kept = set(a["user_id"].to_list())
    assert 0 < len(kept) < len(USERS)
    assert kept == {u for u in USERS if user_kept(u, 0.5, 7)}
    full = read_examples(lake).collect()
    # all examples of a kept user are kept
    assert a.height == full.filter(pl.col("user_id").is_in(list(kept))).height
    # the decision for a user does not depend on the date range
    one_day = read_examples(lake, start=E3, end=E3, sample_fraction=0.5, seed=7).collect()
    assert set(one_day["user_id"].to_list()) == kept
    other = read_examples(lake, sample_fraction=0.5, seed=8).collect()
    assert set(other["user_id"].to_list()) != kept


def test_iter_batches_covers_every_row_once(lake):
    lf = read_examples(lake)
    full = lf.collect()
    enc = Encoders.fit(full, default_spec())
    n_dense, n_sparse = len(enc.spec.dense), len(enc.spec.sparse)
    for seed in (None, 3):
        batches = list(iter_batches(lf, enc, 64, shuffle_seed=seed))
        assert sum(len(b) for b in batches) == full.height
        assert all(len(b) == 64 for b in batches[:-1]) and 0 < len(batches[-1]) <= 64
        for b in batches:
            assert b.dense.dtype == torch.float32 and b.dense.shape[1] == n_dense
            assert b.sparse.dtype == torch.int64 and b.sparse.shape[1] == n_sparse
            assert b.labels.dtype == torch.float32 and b.labels.shape[1] == 3
        # each example exactly once: the multiset of rows equals the one-shot transform
        got = torch.cat([torch.cat([b.dense, b.sparse.float(), b.labels], 1) for b in batches])
        ref = enc.transform(full)
        want = torch.cat([ref.dense, ref.sparse.float(), ref.labels], 1)
        assert got.shape == want.shape
        assert torch.equal(_sorted_rows(got), _sorted_rows(want))
        assert int(got[:, -3].sum()) == full["label_take"].sum()


def _sorted_rows(t: torch.Tensor) -> torch.Tensor:
    rows = sorted(map(tuple, t.tolist()))
    return torch.tensor(rows)


def test_iter_batches_accepts_a_dataframe_and_multi_day_chunks(lake):
    full = read_examples(lake).collect()
    enc = Encoders.fit(full, default_spec())
    batches = list(iter_batches(full, enc, 1000, days_per_chunk=2, drop_last=False))
    assert [len(b) for b in batches] == [full.height]


def test_missing_or_empty_tables_are_named(lake, tmp_path):
    with pytest.raises(FileNotFoundError, match="gold/training_examples"):
        read_examples(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="gold/nope"):
        table_versions(lake, ["nope"])
    empty = tmp_path / "empty"
    build = build_lakehouse(empty)
    schema = pl.scan_delta(f"{build}/gold/training_examples").collect_schema()
    pl.DataFrame(schema=schema).write_delta(f"{build}/gold/training_examples", mode="overwrite")
    with pytest.raises(ValueError, match="empty: .*gold/training_examples"):
        read_examples(build)


def test_table_versions(lake):
    v = table_versions(lake)
    assert v == {"training_examples": 0, "user_features_daily": 0, "class_features_daily": 0}
