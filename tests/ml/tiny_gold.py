"""A tiny gold lakehouse (Delta tables in a temp folder) that the `ml` tests share: 40 users,
a handful of classes on the bike, three event days E1..E3 with hand-chosen features, examples
and bronze classes. Built by `build_lakehouse`; `tests/ml/conftest.py` adds candidates."""

from __future__ import annotations

import datetime as dt

import polars as pl

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
        "last_class_id": "c1",
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
