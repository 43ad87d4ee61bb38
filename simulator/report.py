"""Realism report: statistics computed from the landing files alone (as an analyst would),
each against the range DESIGN.md asks of a real-looking platform, with PASS/FAIL.

Definitions (hours are UTC, the platform's clock):
- session: a user's workouts where each starts < 30 min after the previous one ended;
- active user: signed up before the window and has a workout in every full week of it;
- time-of-day peak: the bucket (morning 5-11, midday 11-16, evening 16-21, night 21-5) in which
  the discipline's share of that bucket's workouts is highest (share, not count: all classes
  are busiest when most people work out);
- short stretch/cool-down: stretching, yoga, meditation or walking of 15 minutes or less;
- new-class decay: for classes released in the window and observed for H days (H = 28, or less
  on short windows), the share of their first-H-day workouts taken in the first H/2 days."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .export import SCHEMAS, resolve

BUCKETS = ("morning", "midday", "evening", "night")
SHORT_COOLDOWN = ("stretching", "yoga", "meditation", "walking")


def read_entity(landing: str, entity: str, columns: list[str] | None = None) -> pl.DataFrame:
    """All daily files of an entity, as one frame (landing_date added)."""
    fs, root = resolve(landing)
    sel = pafs.FileSelector(f"{root}/{entity}", recursive=True, allow_not_found=True)
    infos = sorted((i for i in fs.get_file_info(sel) if i.type == pafs.FileType.File), key=lambda i: i.path)
    schema = SCHEMAS[entity]
    tables = []
    for info in infos:
        name = info.path.rsplit("/", 1)[-1]
        if name.startswith(".") or "date=" not in info.path:
            continue
        if name.endswith(".parquet"):
            t = pq.read_table(info.path, filesystem=fs, columns=columns)
        elif name.endswith(".jsonl"):
            if info.size == 0:
                continue
            with fs.open_input_stream(info.path) as f:
                t = pajson.read_json(f, parse_options=pajson.ParseOptions(explicit_schema=schema))
            t = t.select(columns) if columns else t
        else:
            continue
        tables.append(t.cast(pa.schema([schema.field(n) for n in t.column_names])))
    if not tables:
        return pl.from_arrow(schema.empty_table().select(columns) if columns else schema.empty_table())
    return pl.from_arrow(pa.concat_tables(tables))


def _fig(value, target: str, ok: bool, detail: str = "") -> dict:
    return {"value": value, "target": target, "pass": bool(ok), "detail": detail}


def report(landing: str) -> dict:
    users = read_entity(landing, "users", ["user_id", "signup_ts"])
    classes = read_entity(landing, "classes", ["class_id", "instructor_id", "discipline", "duration_min", "release_ts"])
    w = read_entity(landing, "workouts", ["user_id", "class_id", "platform", "start_ts", "minutes"])
    counts = {
        "users": users.height,
        "instructors": read_entity(landing, "instructors", ["instructor_id"]).height,
        "classes": classes.height,
        "workouts": w.height,
        "music_likes": read_entity(landing, "music_likes", ["user_id"]).height,
        "bookmarks": read_entity(landing, "bookmarks", ["user_id"]).height,
        "impressions": read_entity(landing, "impressions", ["user_id"]).height,
    }
    if w.height == 0:
        return {"counts": counts, "figures": {}, "passed": False}
    w = w.join(classes, on="class_id", how="left").with_columns(
        hour=pl.col("start_ts").dt.hour(),
        date=pl.col("start_ts").dt.date(),
        weekend=pl.col("start_ts").dt.weekday() >= 6,
        end_ts=pl.col("start_ts") + pl.duration(microseconds=(pl.col("minutes") * 60e6).cast(pl.Int64)),
    )
    first_day, last_day = w["date"].min(), w["date"].max()
    n_days = (last_day - first_day).days + 1
    counts["days"] = n_days
    f: dict[str, dict] = {}

    # favourite instructors
    per_user = w.group_by("user_id").agg(n=pl.len())
    heavy = per_user.filter(pl.col("n") >= 8)["user_id"]
    top = (
        w.filter(pl.col("user_id").is_in(heavy.implode()))
        .group_by("user_id", "instructor_id").agg(k=pl.len())
        .group_by("user_id").agg(share=pl.col("k").max() / pl.col("k").sum())
    )
    v = float(top["share"].mean()) if top.height else float("nan")
    f["top_instructor_share"] = _fig(round(v, 3), "0.30-0.60", 0.30 <= v <= 0.60, f"users with >= 8 workouts: {top.height}")

    # platform x discipline
    def share(platform: str, discs: tuple[str, ...]) -> float:
        p = w.filter(pl.col("platform") == platform)
        return float(p["discipline"].is_in(list(discs)).mean()) if p.height else float("nan")

    v = share("bike", ("cycling",))
    f["bike_cycling_share"] = _fig(round(v, 3), ">= 0.70", v >= 0.70)
    v = share("tread", ("running", "walking"))
    f["tread_run_walk_share"] = _fig(round(v, 3), ">= 0.70", v >= 0.70)
    app = w.filter(pl.col("platform") == "app")["discipline"].value_counts(normalize=True).sort("proportion", descending=True)
    mix = {r["discipline"]: round(r["proportion"], 3) for r in app.iter_rows(named=True)}
    broad = sum(p >= 0.05 for p in mix.values())
    top_app = max(mix.values()) if mix else 1.0
    f["app_discipline_mix"] = _fig(broad, ">= 5 disciplines with >= 5%, none > 45%", broad >= 5 and top_app <= 0.45,
                                   ", ".join(f"{k} {p:.2f}" for k, p in mix.items()))

    # time of day
    h = pl.col("hour")
    w = w.with_columns(
        bucket=pl.when((h >= 5) & (h < 11)).then(pl.lit("morning"))
        .when((h >= 11) & (h < 16)).then(pl.lit("midday"))
        .when((h >= 16) & (h < 21)).then(pl.lit("evening")).otherwise(pl.lit("night"))
    )
    tab = w.group_by("bucket", "discipline").agg(n=pl.len()).with_columns(
        share=pl.col("n") / pl.col("n").sum().over("bucket")
    )
    peaks = {}
    for disc, want in (("yoga", "morning"), ("stretching", "morning"), ("meditation", "night"), ("cycling", "evening")):
        t = tab.filter(pl.col("discipline") == disc).sort("share", descending=True)
        got = t["bucket"][0] if t.height else None
        peaks[disc] = got
        detail = ", ".join(f"{r['bucket']} {r['share']:.3f}" for r in t.iter_rows(named=True))
        f[f"peak_{disc}"] = _fig(got, want, got == want, detail)
    by_hour = w.group_by("bucket").agg(n=pl.len())
    counts["workouts_by_bucket"] = {r["bucket"]: r["n"] for r in by_hour.iter_rows(named=True)}

    # weekend durations
    wk = w.group_by("weekend").agg(d=pl.col("duration_min").mean())
    d = {r["weekend"]: r["d"] for r in wk.iter_rows(named=True)}
    ratio = d.get(True, float("nan")) / d.get(False, float("nan"))
    f["weekend_duration_ratio"] = _fig(round(ratio, 3), ">= 1.10", ratio >= 1.10,
                                       f"weekend {d.get(True, 0):.1f} min vs weekday {d.get(False, 0):.1f} min")

    # sessions
    s = w.sort("user_id", "start_ts").with_columns(
        new=(pl.col("user_id") != pl.col("user_id").shift(1))
        | ((pl.col("start_ts") - pl.col("end_ts").shift(1)) >= pl.duration(minutes=30))
    ).with_columns(session=pl.col("new").fill_null(True).cum_sum())
    s = s.with_columns(pos=pl.int_range(pl.len()).over("session"))
    sizes = s.group_by("session").agg(n=pl.len())["n"]
    v = float((sizes >= 2).mean())
    f["multi_class_session_share"] = _fig(round(v, 3), "0.25-0.33", 0.25 <= v <= 0.33, f"sessions: {len(sizes)}")
    second = s.filter(pl.col("pos") == 1)
    short = second["discipline"].is_in(list(SHORT_COOLDOWN)) & (second["duration_min"] <= 15)
    v = float(short.mean()) if second.height else float("nan")
    top2 = second["discipline"].value_counts(normalize=True).sort("proportion", descending=True).head(4)
    detail = ", ".join(f"{r['discipline']} {r['proportion']:.2f}" for r in top2.iter_rows(named=True))
    f["second_class_short_cooldown"] = _fig(round(v, 3), ">= 0.40", v >= 0.40, detail)

    # popularity
    per_class = w.group_by("class_id").agg(n=pl.len())["n"].sort(descending=True)
    k = max(1, int(np.ceil(0.1 * len(per_class))))
    v = float(per_class[:k].sum() / per_class.sum())
    f["top10pct_classes_share"] = _fig(round(v, 3), ">= 0.50", v >= 0.50, f"classes with a workout: {len(per_class)}")
    horizon = min(28, (n_days // 2) * 2)
    w = w.with_columns(age=(pl.col("start_ts") - pl.col("release_ts")).dt.total_days())
    released = classes.filter(
        (pl.col("release_ts").dt.date() >= first_day)
        & (pl.col("release_ts").dt.date() <= last_day - pl.duration(days=horizon - 1))
    )["class_id"]
    nw = w.filter(pl.col("class_id").is_in(released.implode()) & (pl.col("age") < horizon))
    v = float((nw["age"] < horizon // 2).mean()) if nw.height else float("nan")
    detail = f"share of first {horizon} days' workouts in the first {horizon // 2}; classes: {len(released)}"
    f["new_class_early_share"] = _fig(round(v, 3), ">= 0.60", v >= 0.60, detail)
    fresh = float((w["age"] < 14).mean())
    counts["share_workouts_on_classes_under_14_days"] = round(fresh, 3)

    # activity
    weeks = n_days // 7
    if weeks >= 1:
        ww = w.filter(pl.col("date") < first_day + pl.duration(days=7 * weeks)).with_columns(
            week=((pl.col("date") - pl.lit(first_day)).dt.total_days() // 7)
        )
        old = users.filter(pl.col("signup_ts").dt.date() < first_day)["user_id"]
        sess = s.filter(pl.col("new").fill_null(True)).select("user_id", "date")
        act = (
            ww.filter(pl.col("user_id").is_in(old.implode()))
            .group_by("user_id").agg(weeks=pl.col("week").n_unique(), n=pl.len())
            .filter(pl.col("weeks") == weeks)
        )
        per_week = act["n"] / weeks
        v = float(per_week.mean()) if act.height else float("nan")
        in_weeks = pl.col("date") < first_day + pl.duration(days=7 * weeks)
        n_sess = sess.filter(pl.col("user_id").is_in(act["user_id"].implode()) & in_weeks).height
        sw = n_sess / max(1, act.height) / weeks
        detail = f"active users: {act.height} ({act.height / max(1, users.height):.0%}); sessions/week {sw:.2f}"
        f["active_user_workouts_per_week"] = _fig(round(v, 2), "2-5", 2 <= v <= 5, detail)
    later = (pl.col("release_ts").dt.date() > first_day) & (pl.col("release_ts").dt.date() <= last_day)
    v = classes.filter(later).height / max(1, n_days - 1)
    f["new_classes_per_day"] = _fig(round(v, 1), ">= 20 (dozens)", v >= 20)
    later_u = (pl.col("signup_ts").dt.date() > first_day) & (pl.col("signup_ts").dt.date() <= last_day)
    v = users.filter(later_u).height / max(1, n_days - 1)
    f["new_users_per_day"] = _fig(round(v, 1), "> 0 and <= 1% of users a day (a trickle)", 0 < v <= 0.01 * users.height)
    return {"counts": counts, "figures": f, "passed": all(x["pass"] for x in f.values())}


def format_report(r: dict) -> str:
    lines = [f"{'figure':32s} {'value':>10s}  {'target':42s} result"]
    for name, x in r["figures"].items():
        val = x["value"] if not isinstance(x["value"], float) else f"{x['value']:.3f}"
        lines.append(f"{name:32s} {str(val):>10s}  {x['target']:42s} {'PASS' if x['pass'] else 'FAIL'}")
        if x.get("detail"):
            lines.append(f"{'':32s} {'':>10s}  {x['detail']}")
    lines.append("counts: " + json.dumps(r["counts"]))
    lines.append("overall: " + ("PASS" if r["passed"] else "FAIL"))
    return "\n".join(lines)
