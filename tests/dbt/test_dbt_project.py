"""The dbt project end to end on a small fake bronze layer.

Writes bronze Delta tables (the contract's columns + landing_date, _source_file, _ingested_at)
under tmp_path, runs `dbt build` in a subprocess (cwd=dbt_project, everything it writes kept
under tmp_path), and checks properties of the marts read back with DuckDB:

- point in time: a feature row for date D counts only events dated <= D (so the D - 1 row a
  training example joins never sees day D's workouts);
- negative sampling: exactly `negatives_per_positive` distinct negatives per positive, never the
  positive class, only classes offered on that platform and released before the workout;
- a one-day partition run after the day lands gives the same rows as a full build.

The reference numbers are computed from the Python-side data, never from the marts.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from lakehouse.dbt_invocation import run_env
from tests.dbt.dbt_cli import PROJECT_DIR, dbt_executable

deltalake = pytest.importorskip("deltalake")

DAYS = [dt.date(2025, 3, 1) + dt.timedelta(days=i) for i in range(6)]
LAST_DAY = DAYS[-1]
K = 4  # negatives_per_positive (the project default)
TS = pa.timestamp("us", tz="UTC")
DISCIPLINE_BY_EQUIPMENT = {"bike": ["cycling"], "tread": ["running", "walking"], "none": ["yoga", "strength", "stretching"]}
PLATFORMS_BY_EQUIPMENT = {"bike": ["bike", "app"], "tread": ["tread", "app"], "none": ["bike", "tread", "app"]}


def _ts(day: dt.date, hour: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.timezone.utc) + dt.timedelta(hours=hour)


def make_bronze_rows(seed: int = 11) -> dict[str, list[dict]]:
    """Plausible small platform data. Every workout has >= K + 1 classes available on its platform."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {e: [] for e in
                                   ("users", "instructors", "classes", "workouts", "music_likes", "bookmarks", "impressions")}
    for i in range(6):
        rows["instructors"].append(dict(instructor_id=f"i{i}", name=f"Instructor {i}",
                                        primary_discipline=["cycling", "running", "yoga", "strength", "walking", "stretching"][i],
                                        joined_ts=_ts(DAYS[0], 0.1)))
    # users: 30 on day one, two more on day four; u_late works out for the first time on day five
    for i in range(30):
        rows["users"].append(dict(user_id=f"u{i:02d}", signup_ts=_ts(DAYS[0], 0.2 + i / 100)))
    rows["users"] += [dict(user_id="u_new", signup_ts=_ts(DAYS[3], 0.1)), dict(user_id="u_late", signup_ts=_ts(DAYS[3], 0.2))]
    for u in rows["users"]:
        u.update(birth_year=int(rng.integers(1960, 2005)), gender=str(rng.choice(["f", "m"])), country="US",
                 fitness_level=str(rng.choice(["beginner", "intermediate", "advanced"])),
                 owns_bike=bool(rng.random() < 0.6), owns_tread=bool(rng.random() < 0.4))
    # classes: 8 per equipment released early on day one, then 2 per equipment every day at noon
    n = 0
    for day_i, day in enumerate(DAYS):
        for equipment in ("bike", "tread", "none"):
            for j in range(8 if day_i == 0 else 2):
                hour = 0.5 + j / 100 if day_i == 0 else 12.0 + j / 100
                rows["classes"].append(dict(
                    class_id=f"c{n:03d}", title=f"Class {n}", instructor_id=f"i{n % 6}",
                    discipline=str(rng.choice(DISCIPLINE_BY_EQUIPMENT[equipment])), equipment=equipment,
                    duration_min=int(rng.choice([10, 20, 30, 45])), difficulty=float(rng.uniform(1, 9)),
                    body_focus=str(rng.choice(["lower", "upper", "full", "core", "mind"])),
                    music_genre=str(rng.choice(["pop", "rock"])), release_ts=_ts(day, hour)))
                n += 1
    # workouts: ~40 a day, sessions of one to three back-to-back classes
    w = 0
    for day in DAYS:
        signed_up = [u["user_id"] for u in rows["users"]
                     if u["signup_ts"].date() <= day and u["user_id"] != "u_late"]
        chosen = list(rng.choice(signed_up, size=min(18, len(signed_up)), replace=False))
        if day == DAYS[4]:
            chosen.append("u_late")
        for user in chosen:
            hour = float(rng.uniform(6, 21))
            for _ in range(int(rng.integers(1, 4))):
                start = _ts(day, hour)
                available = [c for c in rows["classes"] if c["release_ts"] < start]
                c = available[int(rng.integers(len(available)))]
                platform = str(rng.choice(PLATFORMS_BY_EQUIPMENT[c["equipment"]]))
                completed = bool(rng.random() < 0.8)
                minutes = float(c["duration_min"] if completed else round(c["duration_min"] * rng.uniform(0.2, 0.9), 2))
                rows["workouts"].append(dict(
                    workout_id=f"w{w:04d}", user_id=str(user), class_id=c["class_id"], platform=platform,
                    start_ts=start, completed=completed, minutes=minutes, output_kj=float(rng.uniform(50, 400))))
                if rng.random() < 0.3:
                    rows["music_likes"].append(dict(user_id=str(user), class_id=c["class_id"],
                                                    liked_ts=start + dt.timedelta(minutes=5)))
                if rng.random() < 0.15:
                    rows["bookmarks"].append(dict(user_id=str(user), class_id=c["class_id"],
                                                  bookmarked_ts=start + dt.timedelta(minutes=1)))
                # the home screen showed it just before, plus a class not taken
                for shown, pos in ((c, 1), (available[int(rng.integers(len(available)))], 2)):
                    rows["impressions"].append(dict(
                        impression_id=f"m{len(rows['impressions']):05d}", user_id=str(user), platform=platform,
                        shown_ts=start - dt.timedelta(minutes=2), class_id=shown["class_id"], position=pos))
                hour += minutes / 60 + float(rng.uniform(0.02, 0.3))
                w += 1
                if hour > 23.5:
                    break
    return rows


EVENT_TIME = dict(users="signup_ts", instructors="joined_ts", classes="release_ts", workouts="start_ts",
                  music_likes="liked_ts", bookmarks="bookmarked_ts", impressions="shown_ts")
TYPES = dict(birth_year=pa.int32(), duration_min=pa.int32(), position=pa.int32())


def write_bronze(root: Path | str, rows: dict[str, list[dict]], days: list[dt.date], mode: str,
                 storage_options: dict | None = None) -> None:
    from deltalake import write_deltalake

    ingested = dt.datetime(2025, 4, 1, tzinfo=dt.timezone.utc)
    for entity, records in rows.items():
        picked = [r for r in records if r[EVENT_TIME[entity]].date() in days]
        if not picked:
            continue
        columns = {}
        for name in picked[0]:
            values = [r[name] for r in picked]
            typ = TS if name.endswith("_ts") else TYPES.get(name)
            columns[name] = pa.array(values, typ)
        columns["landing_date"] = pa.array([r[EVENT_TIME[entity]].date() for r in picked], pa.date32())
        columns["_source_file"] = pa.array([f"landing/{entity}/part.parquet"] * len(picked))
        columns["_ingested_at"] = pa.array([ingested] * len(picked), TS)
        write_deltalake(f"{root}/bronze/{entity}", pa.table(columns), partition_by=["landing_date"], mode=mode,
                        storage_options=storage_options)


def run_dbt(work: Path, warehouse: Path, lakehouse: Path | str, *args: str, env: dict | None = None) -> str:
    env = {
        **os.environ,
        "LAKEHOUSE_URI": str(lakehouse),
        "LAKEHOUSE_DUCKDB_PATH": str(warehouse),
        "DUCKDB_EXTENSION_DIRECTORY": str(work / "duckdb_extensions"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_TARGET": "local",
        **(env or {}),
    }
    cmd = [dbt_executable(), "build", "--target-path", str(work / f"target_{warehouse.stem}"),
           "--log-path", str(work / "logs"), *args]
    proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two warehouses over the same bronze: `daily` (full build of the first five days, then a
    one-day partition run once day six lands) and `full` (one full build of all six days)."""
    work = tmp_path_factory.mktemp("dbt")
    lakehouse = work / "lakehouse"
    rows = make_bronze_rows()
    write_bronze(lakehouse, rows, DAYS[:-1], mode="overwrite")
    daily = work / "daily.duckdb"
    run_dbt(work, daily, lakehouse)
    write_bronze(lakehouse, rows, [LAST_DAY], mode="append")
    day = LAST_DAY.isoformat()
    # the partition run as the Dagster asset starts it: the range in the environment
    partition_log = run_dbt(work, daily, lakehouse, env=run_env(LAST_DAY, LAST_DAY))
    full = work / "full.duckdb"
    run_dbt(work, full, lakehouse)
    ref = duckdb.connect()
    ref.execute("set TimeZone = 'UTC'")
    for entity, records in rows.items():
        ref.register(f"ref_{entity}", pa.Table.from_pylist(records))
    return dict(daily=daily, full=full, ref=ref, rows=rows, work=work, partition_log=partition_log)


def test_a_partition_run_reuses_the_parse(built):
    """The range travels outside --vars, so the partition run after a full build on the same
    target folder parses only what changed instead of the whole project."""
    log = built["partition_log"]
    assert "Unable to do partial parsing" not in log, log[-3000:]


def _query(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_user_features_are_point_in_time(built):
    ref = built["ref"]
    feats = _query(built["full"], """
        select user_id, feature_date, workouts_total, workouts_7d, music_likes_total, last_workout_date,
               last_class_id
        from user_features_daily""")
    assert feats, "user_features_daily is empty"
    ref.register("feats", pa.Table.from_pylist(
        [dict(user_id=u, feature_date=d, workouts_total=t, workouts_7d=w7, likes=lk, last=last,
              last_class=lc)
         for u, d, t, w7, lk, last, lc in feats]))
    wrong = ref.execute("""
        with w as (select user_id, cast(start_ts at time zone 'UTC' as date) as day from ref_workouts),
             l as (select user_id, cast(liked_ts at time zone 'UTC' as date) as day from ref_music_likes)
        select f.*,
            (select count(*) from w where w.user_id = f.user_id and w.day <= f.feature_date) as expect_total,
            (select count(*) from w where w.user_id = f.user_id and w.day > f.feature_date - 7
                                     and w.day <= f.feature_date) as expect_7d,
            (select count(*) from l where l.user_id = f.user_id and l.day <= f.feature_date) as expect_likes,
            (select max(day) from w where w.user_id = f.user_id and w.day <= f.feature_date) as expect_last,
            -- the class of the latest workout on or before the date (the model's recent item)
            (select class_id from ref_workouts as r where r.user_id = f.user_id
                 and cast(r.start_ts at time zone 'UTC' as date) <= f.feature_date
             order by r.start_ts desc limit 1) as expect_last_class
        from feats as f
    """).fetchall()
    bad = [r for r in wrong if (r[2], r[3], r[4], r[5], r[6]) != (r[7], r[8], r[9], r[10], r[11])]
    assert not bad, f"features that count other days' events: {bad[:5]}"
    # the user whose first workout is on day five has nothing on day four
    late = {d: (t, last) for u, d, t, _, _, last, _ in feats if u == "u_late"}
    assert late[DAYS[3]] == (0, None)
    assert late[DAYS[4]][0] > 0 and late[DAYS[4]][1] == DAYS[4]
    # a row for every signed-up user and day, none before sign-up
    signups = {u["user_id"]: u["signup_ts"].date() for u in built["rows"]["users"]}
    expected = {(u, d) for u, s in signups.items() for d in DAYS if d >= s}
    assert {(u, d) for u, d, *_ in feats} == expected


def test_class_features_are_point_in_time(built):
    ref = built["ref"]
    feats = _query(built["full"], "select class_id, feature_date, workouts_total, workouts_1d, age_days from class_features_daily")
    ref.register("cfeats", pa.Table.from_pylist(
        [dict(class_id=c, feature_date=d, total=t, one=o, age=a) for c, d, t, o, a in feats]))
    bad = ref.execute("""
        with w as (select class_id, cast(start_ts at time zone 'UTC' as date) as day from ref_workouts)
        select f.* from cfeats as f
        where f.total <> (select count(*) from w where w.class_id = f.class_id and w.day <= f.feature_date)
           or f.one <> (select count(*) from w where w.class_id = f.class_id and w.day = f.feature_date)
           or f.age < 0
    """).fetchall()
    assert not bad, f"class features that count other days' events: {bad[:5]}"
    released = {c["class_id"]: c["release_ts"].date() for c in built["rows"]["classes"]}
    assert {(c, d) for c, d, *_ in feats} == {(c, d) for c, r in released.items() for d in DAYS if d >= r}


def test_negative_sampling(built):
    ref = built["ref"]
    examples = _query(built["full"], """
        select workout_id, sample_index, class_id, platform, event_date, feature_date, is_negative,
               label_take, label_complete, label_music_like
        from training_examples""")
    ref.register("ex", pa.Table.from_pylist([dict(zip(
        ["workout_id", "sample_index", "class_id", "platform", "event_date", "feature_date", "is_negative",
         "label_take", "label_complete", "label_music_like"], r)) for r in examples]))
    workouts = {w["workout_id"]: w for w in built["rows"]["workouts"]}
    classes = {c["class_id"]: c for c in built["rows"]["classes"]}
    by_workout: dict[str, list[tuple]] = {}
    for r in examples:
        by_workout.setdefault(r[0], []).append(r)
    assert set(by_workout) == set(workouts), "one positive per workout, every workout"
    for wid, rs in by_workout.items():
        w = workouts[wid]
        positives = [r for r in rs if not r[6]]
        negatives = [r for r in rs if r[6]]
        assert len(positives) == 1 and positives[0][2] == w["class_id"] and positives[0][7] == 1
        assert positives[0][8] == int(w["completed"])
        assert len(negatives) == K, f"{wid}: {len(negatives)} negatives"
        assert len({r[2] for r in negatives}) == K, f"{wid}: repeated negatives"
        assert sorted(r[1] for r in rs) == list(range(K + 1))
        for r in negatives:
            c = classes[r[2]]
            assert r[2] != w["class_id"], f"{wid}: negative equals the positive"
            assert r[7:] == (0, 0, 0)
            assert c["release_ts"] < w["start_ts"], f"{wid}: {r[2]} released after the workout"
            assert w["platform"] in PLATFORMS_BY_EQUIPMENT[c["equipment"]], \
                f"{wid}: {r[2]} ({c['equipment']}) is not offered on the {w['platform']}"
        for r in rs:
            assert r[3] == w["platform"] and r[4] == w["start_ts"].date()
            assert r[5] == r[4] - dt.timedelta(days=1)
    # labels: music likes after the start, the same day
    likes = ref.execute("""
        select count(*) from ex join ref_workouts w using (workout_id)
        where not ex.is_negative and ex.label_music_like <> (
            select count(*) > 0 from ref_music_likes l
            where l.user_id = w.user_id and l.class_id = w.class_id and l.liked_ts >= w.start_ts
              and cast(l.liked_ts at time zone 'UTC' as date) = cast(w.start_ts at time zone 'UTC' as date))::int
    """).fetchone()[0]
    assert likes == 0


def test_scoring_candidates(built):
    rows = _query(built["full"], "select feature_date, serve_date, platform, class_id from scoring_candidates")
    expected = {(d, d + dt.timedelta(days=1), p, c["class_id"])
                for d in DAYS for c in built["rows"]["classes"] if c["release_ts"].date() <= d
                for p in ("bike", "tread", "app") if p == "app" or c["equipment"] in (p, "none")}
    assert set(rows) == expected and len(rows) == len(expected)


MARTS = {
    "user_features_daily": ("feature_date", ["user_id"]),
    "class_features_daily": ("feature_date", ["class_id"]),
    "training_examples": ("event_date", ["example_id"]),
    "scoring_candidates": ("feature_date", ["platform", "class_id"]),
}


def _same(a, b, column: str) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        # running sums of doubles may differ in the last bits; usual_hour_* is rounded to 0.01
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.011 if column.startswith("usual_hour") else 1e-9)
    return a == b


def _columns(path: Path, model: str) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [d[0] for d in con.execute(f"select * from {model} limit 0").description]
    finally:
        con.close()


def assert_same_rows(got_path: Path, want_path: Path, model: str) -> None:
    """The mart in two warehouses: the same columns and the same rows, row for row (ordered by
    its date and key; floats within `_same`'s tolerance). Every day, the last one included."""
    date_column, keys = MARTS[model]
    columns = _columns(want_path, model)
    assert _columns(got_path, model) == columns, model
    sql = f"select * from {model} order by {date_column}, {', '.join(keys)}"
    got, want = _query(got_path, sql), _query(want_path, sql)
    at = columns.index(date_column)
    assert any(r[at] == LAST_DAY for r in want), f"{model} has no rows for {LAST_DAY}"
    assert len(got) == len(want), model
    for g, w in zip(got, want):
        diffs = [c for c, x, y in zip(columns, g, w) if not _same(x, y, c)]
        assert not diffs, f"{model}: {diffs} differ for {dict(zip(columns, w))}: {dict(zip(columns, g))}"


@pytest.mark.parametrize("model", sorted(MARTS))
def test_one_day_partition_run_equals_full_build(built, model):
    """`daily` built days 1-5 before day 6 landed, then ran the day-6 partition alone; `full`
    built all six days at once. Point in time, every row must agree (days 1-5 too: day 6's
    data may not change them)."""
    assert_same_rows(built["daily"], built["full"], model)


@pytest.mark.slow
def test_s3_target_reads_bronze_from_s3(built):
    """The `s3` target against a real S3 HTTP endpoint on loopback (moto): same marts as local."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="lake")
        options = {**keys, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
                   "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        write_bronze("s3://lake/lh", built["rows"], DAYS, mode="overwrite", storage_options=options)
        warehouse = built["work"] / "s3.duckdb"
        run_dbt(built["work"], warehouse, "s3://lake/lh", "--target", "s3",
                env={**keys, "AWS_ENDPOINT_URL": endpoint, "DBT_TARGET": "s3"})
    finally:
        server.stop()
    for model in MARTS:  # the local full build of the same bronze rows, row for row
        assert_same_rows(warehouse, built["full"], model)
