"""Hand-written landing exports for tests: small, exact, and independent of the simulator."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.contract import BY_NAME, ENTITIES
from lakehouse.landing.manifest import seal_day

DAY0 = dt.date(2026, 9, 1)
UTC = dt.timezone.utc


def ts(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def write_parquet(landing: Path, entity: str, day: dt.date, rows: list[dict], name="part-0000.parquet",
                  schema: pa.Schema | None = None) -> Path:
    folder = landing / entity / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema or BY_NAME[entity].schema)
    pq.write_table(table, folder / name)
    return folder / name


def write_jsonl(landing: Path, entity: str, day: dt.date, rows: list[dict | str], name="part-0000.jsonl") -> Path:
    folder = landing / entity / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in rows:
        if isinstance(r, str):
            lines.append(r)
            continue
        lines.append(json.dumps({k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, dt.datetime) else v)
                                 for k, v in r.items()}))
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder / name


def catalogue(day: dt.date = DAY0) -> dict[str, list[dict]]:
    users = [dict(user_id=f"u{i}", signup_ts=ts(day, 1), birth_year=1990, gender="f", country="US",
                  fitness_level="beginner", owns_bike=True, owns_tread=False) for i in range(1, 4)]
    instructors = [dict(instructor_id="i1", name="Ann", primary_discipline="cycling", joined_ts=ts(day, 0))]
    classes = [dict(class_id=f"c{i}", title=f"Ride {i}", instructor_id="i1", discipline="cycling",
                    equipment="bike", duration_min=20, difficulty=5.0, body_focus="lower",
                    music_genre="pop", release_ts=ts(day, 0)) for i in range(1, 4)]
    return {"users": users, "instructors": instructors, "classes": classes}


def workout(wid: str, user: str, cls: str, day: dt.date, hour: int = 7, **kw) -> dict:
    row = dict(workout_id=wid, user_id=user, class_id=cls, platform="bike", start_ts=ts(day, hour),
               completed=True, minutes=20.0, output_kj=150.0)
    row.update(kw)
    return row


def seal(landing: Path, day: dt.date) -> dict:
    """Write the day's manifest from the files there, as an exporter does last."""
    return seal_day(str(landing), day, [e.name for e in ENTITIES])


def write_day(landing: Path, day: dt.date, *, with_catalogue: bool, workouts: list[dict]) -> None:
    if with_catalogue:
        for entity, rows in catalogue(day).items():
            write_parquet(landing, entity, day, rows)
    write_parquet(landing, "workouts", day, workouts)
    write_jsonl(landing, "music_likes", day, [dict(user_id="u1", class_id="c1", liked_ts=ts(day, 8))])
    write_jsonl(landing, "impressions", day, [
        dict(impression_id=f"im-{day}-{p}", user_id="u1", platform="bike", shown_ts=ts(day, 6),
             class_id=f"c{p}", position=p) for p in (1, 2, 3)])
    seal(landing, day)
