"""Writing the app's raw exports to the landing zone (a local folder or an s3://bucket/prefix).

Layout: <landing>/<entity>/date=YYYY-MM-DD/part-0000.parquet (users, instructors, classes,
workouts) or .jsonl (music_likes, bookmarks, impressions: one JSON object per line, timestamps
ISO-8601 UTC with "Z"). Every entity gets a file every day (possibly empty), then the day's
manifest <landing>/_manifests/date=YYYY-MM-DD.json is written last, listing every file with its
row count, size and sha256 (the lakehouse's landing contract, lakehouse/landing/manifest.py): a
reader that sees the manifest sees the whole day and can verify it. Each file appears whole: a local file is written under a
temporary name and renamed; an S3 object becomes visible only when its upload completes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import vocab as V
from .behaviour import DayEvents
from .world import World

TS = pa.timestamp("us", tz="UTC")
PARQUET = ("users", "instructors", "classes", "workouts")
JSONL = ("music_likes", "bookmarks", "impressions")
GENDERS = np.array(["F", "M", "X"], dtype=object)

# the columns written, re-declared here (the simulator does not import the lakehouse)
SCHEMAS = {
    "users": pa.schema(
        [("user_id", pa.string()), ("signup_ts", TS), ("birth_year", pa.int32()), ("gender", pa.string()),
         ("country", pa.string()), ("fitness_level", pa.string()), ("owns_bike", pa.bool_()),
         ("owns_tread", pa.bool_())]
    ),
    "instructors": pa.schema(
        [("instructor_id", pa.string()), ("name", pa.string()), ("primary_discipline", pa.string()), ("joined_ts", TS)]
    ),
    "classes": pa.schema(
        [("class_id", pa.string()), ("title", pa.string()), ("instructor_id", pa.string()),
         ("discipline", pa.string()), ("equipment", pa.string()), ("duration_min", pa.int32()),
         ("difficulty", pa.float64()), ("body_focus", pa.string()), ("music_genre", pa.string()),
         ("release_ts", TS)]
    ),
    "workouts": pa.schema(
        [("workout_id", pa.string()), ("user_id", pa.string()), ("class_id", pa.string()),
         ("platform", pa.string()), ("start_ts", TS), ("completed", pa.bool_()), ("minutes", pa.float64()),
         ("output_kj", pa.float64())]
    ),
    "music_likes": pa.schema([("user_id", pa.string()), ("class_id", pa.string()), ("liked_ts", TS)]),
    "bookmarks": pa.schema([("user_id", pa.string()), ("class_id", pa.string()), ("bookmarked_ts", TS)]),
    "impressions": pa.schema(
        [("impression_id", pa.string()), ("user_id", pa.string()), ("platform", pa.string()),
         ("shown_ts", TS), ("class_id", pa.string()), ("position", pa.int32())]
    ),
}  # fmt: skip
ENTITIES = PARQUET + JSONL


# ---- where -----------------------------------------------------------------------------
def resolve(landing: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a local folder or an s3://bucket/prefix URI. S3 settings
    come from the standard environment: AWS_ENDPOINT_URL (e.g. a local S3 server),
    AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    if landing.startswith("s3://"):
        kw = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            u = urlparse(endpoint)
            kw["endpoint_override"] = u.netloc or u.path
            kw["scheme"] = u.scheme or "https"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kw["region"] = region
        fs = pafs.S3FileSystem(allow_bucket_creation=True, **kw)
        return fs, landing[len("s3://") :].rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(landing)


CONFIG_PATH = "_simulator/config.json"


def write_config(cfg, fs: pafs.FileSystem, root: str) -> None:
    """`<landing>/_simulator/config.json`: the settings that rebuild the true preferences, so an
    evaluation can rank by the oracle (`SimConfig.from_dict`). Real app exports have no such file."""
    body = json.dumps(cfg.to_dict(), sort_keys=True, indent=1).encode()
    _put(fs, f"{root}/{CONFIG_PATH}", lambda out: out.write(body))


def day_dir(root: str, entity: str, d: date) -> str:
    return f"{root}/{entity}/date={d.isoformat()}"


def _put(fs: pafs.FileSystem, path: str, write) -> None:
    """Write a whole file: via a temporary name + rename on local disks, one upload on S3."""
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(tmp) as out:
            write(out)
        fs.move(tmp, path)
    else:
        with fs.open_output_stream(path) as out:
            write(out)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


# ---- how -------------------------------------------------------------------------------
def id_array(prefix: str, codes, width: int) -> pa.Array:
    s = pc.utf8_lpad(pc.cast(pa.array(np.asarray(codes, np.int64)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, s, "")


def ts_array(start: date, sec) -> pa.Array:
    epoch = int(datetime(start.year, start.month, start.day, tzinfo=timezone.utc).timestamp())
    return pa.array((np.asarray(sec, np.int64) + epoch) * 1_000_000, TS)


def _labels(names, codes) -> pa.Array:
    return pa.array(np.asarray(names, dtype=object)[np.asarray(codes, np.int64)], pa.string())


def jsonl_bytes(table: pa.Table) -> bytes:
    """One JSON object per row, built column-wise (ids and labels need no escaping: they are
    generated from a fixed alphabet; timestamps as ISO-8601 seconds with Z)."""
    if table.num_rows == 0:
        return b""
    parts = []
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if pa.types.is_timestamp(f.type):
            # format each distinct second once (impressions of a visit share their timestamp)
            sec = pc.divide(pc.cast(col, pa.int64()), 1_000_000).to_numpy()
            uniq, inv = np.unique(sec, return_inverse=True)
            text = pc.strftime(pa.array(uniq, pa.timestamp("s", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
            val = pc.binary_join_element_wise('"', pc.take(text, pa.array(inv)), '"', "")
        elif pa.types.is_string(f.type):
            val = pc.binary_join_element_wise('"', col, '"', "")
        else:
            val = pc.cast(col, pa.string())
        parts += [("{" if i == 0 else ",") + f'"{f.name}":', val]
    lines = pc.binary_join_element_wise(*parts, "}\n", "").combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def users_table(world: World, sl: slice) -> pa.Table:
    us, start = world.users, world.cfg.start_date
    by = us.birth_year[sl]
    g = us.gender[sl]
    return pa.Table.from_arrays(
        [
            id_array("u", np.arange(sl.start, sl.stop), world.user_width),
            ts_array(start, us.signup_sec[sl]),
            pa.array(by, pa.int32(), mask=by < 0),
            pa.array(GENDERS[np.maximum(g, 0)], pa.string(), mask=g < 0),
            _labels(V.COUNTRIES, us.country[sl]),
            _labels(V.FITNESS_LEVELS, us.level[sl]),
            pa.array(us.owns_bike[sl]),
            pa.array(us.owns_tread[sl]),
        ],
        schema=SCHEMAS["users"],
    )


def instructors_table(world: World) -> pa.Table:
    ins = world.instructors
    n = len(ins.primary)
    return pa.Table.from_arrays(
        [
            id_array("i", np.arange(n), world.instructor_width),
            pa.array(ins.name, pa.string()),
            _labels(V.DISCIPLINES, ins.primary),
            ts_array(world.cfg.start_date, ins.joined_sec),
        ],
        schema=SCHEMAS["instructors"],
    )


def class_titles(world: World, codes: np.ndarray) -> list[str]:
    cl = world.classes
    out = []
    for c in codes:  # one string per class (thousands a run, never per workout)
        d = V.DISCIPLINES[cl.discipline[c]]
        body = V.BODY_TITLE[V.BODY_FOCUS[cl.body_focus[c]]] if d in ("strength", "stretching") else ""
        genre = V.GENRES[cl.genre[c]].title() if d in ("cycling", "running", "cardio", "walking") else ""
        words = [f"{V.DURATIONS[cl.dur_idx[c]]} min", genre, body, V.TITLE_WORD[d]]
        out.append(" ".join(w for w in words if w))
    return out


def classes_table(world: World, sl: slice) -> pa.Table:
    cl = world.classes
    codes = np.arange(sl.start, sl.stop)
    return pa.Table.from_arrays(
        [
            id_array("c", codes, world.class_width),
            pa.array(class_titles(world, codes), pa.string()),
            id_array("i", cl.instructor[sl], world.instructor_width),
            _labels(V.DISCIPLINES, cl.discipline[sl]),
            _labels(V.EQUIPMENT, cl.equipment[sl]),
            pa.array(V.DURATIONS[cl.dur_idx[sl]], pa.int32()),
            pa.array(cl.difficulty[sl], pa.float64()),
            _labels(V.BODY_FOCUS, cl.body_focus[sl]),
            _labels(V.GENRES, cl.genre[sl]),
            ts_array(world.cfg.start_date, cl.release_sec[sl]),
        ],
        schema=SCHEMAS["classes"],
    )


def event_tables(world: World, ev: DayEvents, day: int) -> dict[str, pa.Table]:
    start = world.cfg.start_date
    stamp = (start + timedelta(days=day)).strftime("%Y%m%d")
    w = ev.workouts
    uw, cw = world.user_width, world.class_width
    tables = {
        "workouts": pa.Table.from_arrays(
            [
                id_array(f"w{stamp}", np.arange(len(w["user"])), 7),
                id_array("u", w["user"], uw),
                id_array("c", w["cls"], cw),
                _labels(V.PLATFORMS, w["platform"]),
                ts_array(start, w["start"]),
                pa.array(w["completed"], pa.bool_()),
                pa.array(w["minutes"], pa.float64()),
                pa.array(w["output_kj"], pa.float64(), from_pandas=True),  # NaN -> null
            ],
            schema=SCHEMAS["workouts"],
        )
    }
    for name, ev_ in (("music_likes", ev.music_likes), ("bookmarks", ev.bookmarks)):
        tables[name] = pa.Table.from_arrays(
            [id_array("u", ev_["user"], uw), id_array("c", ev_["cls"], cw), ts_array(start, ev_["ts"])],
            schema=SCHEMAS[name],
        )
    im = ev.impressions
    tables["impressions"] = pa.Table.from_arrays(
        [
            id_array(f"p{stamp}", np.arange(len(im["user"])), 8),
            id_array("u", im["user"], uw),
            _labels(V.PLATFORMS, im["platform"]),
            ts_array(start, im["ts"]),
            id_array("c", im["cls"], cw),
            pa.array(im["position"], pa.int32()),
        ],
        schema=SCHEMAS["impressions"],
    )
    return tables


def day_tables(world: World, ev: DayEvents, day: int) -> dict[str, pa.Table]:
    """Every entity's table for `day`: day 0 also carries the initial users, all instructors
    and the initial catalogue (their timestamps lie before day 0: the backfill)."""
    first = -1 if day == 0 else day
    users = slice(world.users_of_group(first).start, world.users_of_group(day).stop)
    classes = slice(world.classes_of_group(first).start, world.classes_of_group(day).stop)
    t = {
        "users": users_table(world, users),
        "instructors": instructors_table(world) if day == 0 else SCHEMAS["instructors"].empty_table(),
        "classes": classes_table(world, classes),
    }
    t.update(event_tables(world, ev, day))
    return t


def write_day(landing: str, day_date: date, tables: dict[str, pa.Table], fs=None, root=None) -> dict[str, int]:
    if fs is None:
        fs, root = resolve(landing)
    counts, files = {}, []
    for name in ENTITIES:
        ext = "parquet" if name in PARQUET else "jsonl"
        rel = f"{name}/date={day_date.isoformat()}/part-0000.{ext}"
        data = parquet_bytes(tables[name]) if ext == "parquet" else jsonl_bytes(tables[name])
        _put(fs, f"{root}/{rel}", lambda out, data=data: out.write(data))
        counts[name] = tables[name].num_rows
        files.append({"path": rel, "entity": name, "rows": counts[name], "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    manifest = json.dumps({"date": day_date.isoformat(), "files": files}, sort_keys=True, indent=1).encode()
    _put(fs, f"{root}/_manifests/date={day_date.isoformat()}.json", lambda out: out.write(manifest))
    return counts
