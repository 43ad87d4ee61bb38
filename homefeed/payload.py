"""Input validation and the JSON payloads stored per (user_id, platform).

Payload (compact JSON, UTF-8), rows ordered by row_rank, items by rank:
    {"user_id": "u0001234", "platform": "bike", "serve_date": "2026-10-31", "model_version": 3,
     "cache_version": "v20261031T030512Z-1a2b3c", "source": "personal",
     "rows": [{"row_id": "for_you", "title": "For you",
               "items": [{"rank": 1, "class_id": "c00123", "score": 0.123,
                          "title": "30 min Electronic Ride", "instructor": "Leanne Lee",
                          "discipline": "cycling", "duration_min": 30, "is_new": false}, ...]},
              ...]}
The popular payload has the same shape with "user_id": null, "source": "popular" and one row
{"row_id": "popular", "title": "Popular on Bike", ...}; its score is the class's share of the
platform's workouts over the popularity window (0-1, `ml.inference.load_day`), not a P(take).

The class fields (CLASS_FIELDS) come from the catalogue handed to the publisher, joined here, in
one place, for the cache and so for the API: those the catalogue has (a mapped dataset may have
none but its release date), null for a class the catalogue lacks. `is_new`: released within
NEW_DAYS before the serve date (null when the release date is unknown).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import orjson
import polars as pl

from homefeed.cache import PLATFORM_ID, PLATFORMS, POPULAR_ROW, CacheError

# column -> (dtype family, the dtype the producer is expected to write)
_STR, _INT, _NUM = "string", "integer", "numeric"
RECS_COLUMNS = {"user_id": _STR, "platform": _STR, "row_id": _STR, "row_title": _STR,
                "row_rank": _INT, "rank": _INT, "class_id": _STR, "score": _NUM}
POPULAR_COLUMNS = {"platform": _STR, "rank": _INT, "class_id": _STR, "score": _NUM}
_EXPECTED = {_STR: "Utf8", _INT: "Int32", _NUM: "Float32"}
# what an item shows besides its rank, id and score, in this order; a catalogue brings any of
# them (plus release_date, for is_new)
CLASS_FIELDS = ("title", "instructor", "discipline", "duration_min")
NEW_DAYS = 7  # "new": released in the week before the serve date
_ITEM = ("rank", "class_id", "score")


def _family_ok(dtype: pl.DataType, family: str) -> bool:
    if family == _STR:
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    if family == _INT:
        return dtype.is_integer()
    return dtype.is_integer() or dtype.is_float()


def _describe_row(frame: pl.DataFrame, idx: int) -> str:
    keys = [c for c in ("user_id", "platform", "row_id", "rank", "class_id") if c in frame.columns]
    vals = frame.select(keys).row(idx, named=True)
    return ", ".join(f"{k}={v!r}" for k, v in vals.items())


def _first_bad(frame: pl.DataFrame, cond: pl.Expr) -> int | None:
    hit = frame.select(pl.arg_where(cond).first()).item()
    return None if hit is None else int(hit)


def validate(frame: pl.DataFrame, columns: dict[str, str], *, what: str,
             serve_date: dt.date | None = None, model_version: int | None = None) -> None:
    """Raise CacheError naming the column and the first offending row; return None if clean."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CacheError(f"{what}: missing column(s) {missing} (have {frame.columns})")
    for col, family in columns.items():
        if not _family_ok(frame.schema[col], family):
            raise CacheError(f"{what}: column {col!r} has type {frame.schema[col]}, "
                             f"expected {_EXPECTED[family]} ({family})")
    checks: list[tuple[str, pl.Expr, str]] = [
        (c, pl.col(c).is_null(), "is null") for c in columns]
    checks += [(c, pl.col(c) <= 0, "must be a positive integer")
               for c in ("rank", "row_rank") if c in columns]
    checks += [("score", pl.col("score").cast(pl.Float64).is_nan()
                | pl.col("score").cast(pl.Float64).is_infinite(), "must be finite"),
               ("platform", ~pl.col("platform").cast(pl.String).str.contains(f"^{PLATFORM_ID.pattern}$"),
                f"must match ^{PLATFORM_ID.pattern}$")]
    # Consistency with what the publisher was told, when the frame carries these columns.
    if model_version is not None and "model_version" in frame.columns:
        checks.append(("model_version", pl.col("model_version") != model_version,
                       f"differs from the published model_version {model_version}"))
    if serve_date is not None and "serve_date" in frame.columns:
        checks.append(("serve_date", pl.col("serve_date").cast(pl.Date) != serve_date,
                       f"differs from the published serve_date {serve_date}"))
    key = ["user_id", "platform", "row_id", "rank"] if "row_id" in columns else ["platform", "rank"]
    checks.append(("rank", pl.struct(key).is_duplicated(), f"duplicate {tuple(key)}"))
    for col, cond, msg in checks:
        idx = _first_bad(frame, cond)
        if idx is not None:
            raise CacheError(f"{what}: column {col!r} {msg} at row {idx} ({_describe_row(frame, idx)})")


def _score() -> pl.Expr:
    # The shortest decimal that round-trips the float32 ("0.123", not 0.12300000339746475):
    # polars prints a Float32 that way, and that decimal parsed as Float64 prints the same.
    return pl.col("score").cast(pl.Float32).cast(pl.String).cast(pl.Float64)


def class_fields(classes: pl.DataFrame | None, serve_date: dt.date) -> pl.DataFrame | None:
    """The catalogue as the items show it: class_id + the CLASS_FIELDS it has + is_new (when it
    has release_date); None without a catalogue. CacheError for a catalogue that would be
    ambiguous (no class_id, a class_id twice or null)."""
    if classes is None:
        return None
    what = "classes (the catalogue)"
    if "class_id" not in classes.columns:
        raise CacheError(f"{what}: no class_id column (have {classes.columns})")
    for cond, msg in ((pl.col("class_id").is_null(), "is null"),
                      (pl.col("class_id").is_duplicated(), "is duplicated")):
        idx = _first_bad(classes, cond)
        if idx is not None:
            raise CacheError(f"{what}: column 'class_id' {msg} at row {idx} "
                             f"(class_id={classes['class_id'][idx]!r})")
    cols = [pl.col("class_id").cast(pl.String)]
    cols += [pl.col(c).cast(pl.Int64 if c == "duration_min" else pl.String)
             for c in CLASS_FIELDS if c in classes.columns]
    if "release_date" in classes.columns:
        released = pl.col("release_date").cast(pl.Date)
        cols.append(((released <= serve_date) & (released > serve_date - dt.timedelta(days=NEW_DAYS)))
                    .alias("is_new"))
    return classes.select(cols)


def _item_columns(fields: pl.DataFrame | None) -> list[str]:
    return [*_ITEM, *([] if fields is None else fields.columns[1:])]


def _with_fields(lf: pl.LazyFrame, fields: pl.DataFrame | None) -> pl.LazyFrame:
    return lf if fields is None else lf.join(fields.lazy(), on="class_id", how="left")


def key_frames(rows: pl.LazyFrame, rows_per_frame: int = 250_000) -> Iterator[pl.DataFrame]:
    """The recommendation rows of whole users, about `rows_per_frame` at a time in user order,
    each frame sorted by key and rank: what `CacheStore.publish` takes (complete (user_id,
    platform) groups per frame) in bounded memory.

    Cut by ranges of user_id, not by a hash: inference writes its rows in user order, so a range
    reads only its own row groups (Parquet statistics) and the keys reach SQLite in key order; a
    hash split read the whole day once per frame (291 times at `large`). A null user_id goes to
    the first frame, where validation names it."""
    counts = rows.group_by("user_id").agg(pl.len().alias("n")).sort("user_id").collect()
    part = (counts["n"].cum_sum() - counts["n"]) // max(1, rows_per_frame)
    cuts = counts["user_id"].filter(part != part.shift(1)).to_list()  # first users of frames 2..
    bounds = [None, *cuts, None]
    user = pl.col("user_id")
    for lo, hi in zip(bounds, bounds[1:]):
        if lo is None:
            keep = pl.lit(True) if hi is None else user.is_null() | (user < hi)
        else:
            keep = user >= lo if hi is None else (user >= lo) & (user < hi)
        yield rows.filter(keep).sort("user_id", "platform", "row_rank", "rank").collect()


def personal_payloads(frame: pl.DataFrame, *, serve_date: dt.date, model_version: int,
                      cache_version: str, fields: pl.DataFrame | None = None,
                      ) -> Iterator[tuple[str, str, bytes]]:
    """(user_id, platform, payload) per key of a validated frame, in key order; items carry the
    catalogue's `fields` (`class_fields`) when given.

    The rows array is JSON-encoded by polars in one vectorized pass (about 10x faster than
    building Python dicts for orjson); the header is orjson; both write compact JSON."""
    base = frame.lazy().select(
        pl.col("user_id").cast(pl.String), pl.col("platform").cast(pl.String),
        pl.col("row_id").cast(pl.String), pl.col("row_title").cast(pl.String),
        pl.col("row_rank").cast(pl.Int64), pl.col("rank").cast(pl.Int64),
        pl.col("class_id").cast(pl.String), _score())
    encoded = (
        _with_fields(base, fields)
        # sort inside the groups rather than the whole frame: a global string sort costs more
        .group_by("user_id", "platform", "row_rank", "row_id")
        .agg(pl.col("row_title").first().alias("title"),
             pl.struct(_item_columns(fields)).sort_by("rank").alias("items"))
        .group_by("user_id", "platform")
        .agg(pl.struct("row_id", "title", "items").sort_by("row_rank", "row_id").alias("rows"))
        .sort("user_id", "platform")
        .select("user_id", "platform", pl.struct("rows").struct.json_encode().alias("rows_json"))
        .collect()
    )
    head = {"serve_date": serve_date.isoformat(), "model_version": int(model_version),
            "cache_version": cache_version, "source": "personal"}
    dumps = orjson.dumps
    for user_id, platform, rows_json in encoded.iter_rows():
        # '{"user_id":..,"source":"personal"}' + '{"rows":[...]}' -> one object
        header = dumps({"user_id": user_id, "platform": platform, **head})
        yield user_id, platform, header[:-1] + b"," + rows_json[1:].encode()


def popular_payloads(popular: pl.DataFrame, *, serve_date: dt.date, model_version: int,
                     cache_version: str, platforms=PLATFORMS,
                     fields: pl.DataFrame | None = None) -> dict[str, bytes]:
    """platform -> popular payload ("user_id": null); every platform recommended (`platforms`)
    must have a list. Scores must be shares (0-1), as the personal ones are probabilities."""
    validate(popular, POPULAR_COLUMNS, what="popular")
    idx = _first_bad(popular, (pl.col("score") < 0) | (pl.col("score") > 1))
    if idx is not None:
        raise CacheError(f"popular: column 'score' must be a share in [0, 1] at row {idx} "
                         f"({_describe_row(popular, idx)}, score={popular['score'][idx]}); a count "
                         "is not comparable with the personal rows' probabilities")
    base = popular.lazy().select(pl.col("platform").cast(pl.String), pl.col("rank").cast(pl.Int64),
                                 pl.col("class_id").cast(pl.String), _score())
    items = (_with_fields(base, fields)
             .sort("platform", "rank")
             .group_by("platform", maintain_order=True)
             .agg(pl.struct(_item_columns(fields)).alias("items")).collect())
    by_platform = dict(items.iter_rows())
    absent = [p for p in sorted(platforms) if p not in by_platform]
    if absent:
        raise CacheError(f"popular: no rows for platform(s) {absent}; unknown users there would get nothing")
    return {p: orjson.dumps({
        "user_id": None, "platform": p, "serve_date": serve_date.isoformat(),
        "model_version": int(model_version), "cache_version": cache_version, "source": "popular",
        "rows": [{"row_id": POPULAR_ROW, "title": f"Popular on {p.capitalize()}", "items": its}],
    }) for p, its in by_platform.items()}
