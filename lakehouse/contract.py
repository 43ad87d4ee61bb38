"""The landing contract: what the app's exports look like, entity by entity, and the platform's
vocabulary (platforms, equipment, disciplines, ...), defined here once.

Landing layout (local folder or S3 prefix)::

    <landing>/<entity>/date=YYYY-MM-DD/<any name>.parquet | .jsonl

Each daily folder holds the records the app exported for that day: the users who signed up,
the instructors and classes released, and the day's events. Parquet files carry typed columns;
JSON Lines carry one object per line with timestamps as ISO-8601 strings (UTC, "Z" or offset).

Bronze keeps exactly these columns (typed as below) plus three added by ingest:
``landing_date`` (DATE, the partition), ``_source_file`` and ``_ingested_at``.
Rows that break the contract go to the quarantine table with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

# The platform's vocabulary, defined here once: the categorical values of the landing data, in
# the order dbt lays out its per-value columns. Everything that may import the lakehouse imports
# these. The copies that must exist are held to them by tests/test_vocabulary.py:
# simulator/vocab.py (the simulator is the outside world and imports nothing from the lakehouse),
# ml/features.py (the model ships its own, with its encoders), homefeed/cache.py (the read service
# imports nothing from the lakehouse) and dbt_project/ (the vars `platforms` and `disciplines` in
# dbt_project.yml, the accepted_values tests and the per-value columns of the fitness models).
PLATFORMS = ("bike", "tread", "app")
# Equipment a class needs decides where it is offered: bike classes on the bike (and in the
# app), tread classes on the treadmill (and in the app), equipment-free classes everywhere.
EQUIPMENT = ("bike", "tread", "none")
DISCIPLINES = (
    "cycling",
    "running",
    "walking",
    "strength",
    "yoga",
    "stretching",
    "meditation",
    "cardio",
    "pilates",
)
BODY_FOCUS = ("lower", "upper", "full", "core", "mind")
FITNESS_LEVELS = ("beginner", "intermediate", "advanced")


# One id grammar for every entity of every dataset. The landing ingest quarantines, and the mapped
# import refuses, an id that breaks it; the read service serves every id it accepts (percent-encoded
# in the URL when it is not ASCII). 1 to ID_MAX_LENGTH characters: the first a letter, digit or
# underscore (any script), the rest letters, digits or one of _ . : @ + -. No spaces, slashes,
# control characters or emoji, so an id is safe in a URL path, a file name and a log line.
# Evaluated by polars (Rust regex: \w is Unicode) at ingest and import, with `fullmatch` semantics.
ID_MAX_LENGTH = 128
ID_PATTERN = rf"^\w[\w.:@+-]{{0,{ID_MAX_LENGTH - 1}}}$"
ID_RULE = (f"1-{ID_MAX_LENGTH} characters: a letter, digit or '_' first, then letters, digits "
           "or _ . : @ + -")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool = False
    # accepted values for strings, or (min, max) inclusive for numbers; None: anything typed
    accepted: tuple | None = None
    min: float | None = None
    max: float | None = None
    # an identifier (a key or a reference): must follow ID_PATTERN
    is_id: bool = False


@dataclass(frozen=True)
class Entity:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # column -> entity whose key it must reference (referential integrity at ingest)
    references: dict[str, str] = field(default_factory=dict)
    # the timestamp column checked against the landing day: events must fall on that day;
    # catalogue rows (users, instructors, classes) only must not lie after it, because the
    # first export carries the back catalogue.
    event_time: str | None = None
    event_on_day: bool = True

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


USERS = Entity(
    name="users",
    columns=(
        Column("user_id", pa.string(), is_id=True),
        Column("signup_ts", TS),
        Column("birth_year", pa.int32(), nullable=True, min=1920, max=2015),
        Column("gender", pa.string(), nullable=True),
        Column("country", pa.string()),
        Column("fitness_level", pa.string(), accepted=FITNESS_LEVELS),
        Column("owns_bike", pa.bool_()),
        Column("owns_tread", pa.bool_()),
    ),
    key=("user_id",),
    event_time="signup_ts",
    event_on_day=False,
)

INSTRUCTORS = Entity(
    name="instructors",
    columns=(
        Column("instructor_id", pa.string(), is_id=True),
        Column("name", pa.string()),
        Column("primary_discipline", pa.string(), accepted=DISCIPLINES),
        Column("joined_ts", TS),
    ),
    key=("instructor_id",),
    event_time="joined_ts",
    event_on_day=False,
)

CLASSES = Entity(
    name="classes",
    columns=(
        Column("class_id", pa.string(), is_id=True),
        Column("title", pa.string()),
        Column("instructor_id", pa.string(), is_id=True),
        Column("discipline", pa.string(), accepted=DISCIPLINES),
        Column("equipment", pa.string(), accepted=EQUIPMENT),
        Column("duration_min", pa.int32(), min=1, max=180),
        Column("difficulty", pa.float64(), min=0.0, max=10.0),
        Column("body_focus", pa.string(), accepted=BODY_FOCUS),
        Column("music_genre", pa.string()),
        Column("release_ts", TS),
    ),
    key=("class_id",),
    references={"instructor_id": "instructors"},
    event_time="release_ts",
    event_on_day=False,
)

WORKOUTS = Entity(
    name="workouts",
    columns=(
        Column("workout_id", pa.string(), is_id=True),
        Column("user_id", pa.string(), is_id=True),
        Column("class_id", pa.string(), is_id=True),
        Column("platform", pa.string(), accepted=PLATFORMS),
        Column("start_ts", TS),
        Column("completed", pa.bool_()),
        Column("minutes", pa.float64(), min=0.0, max=240.0),
        Column("output_kj", pa.float64(), nullable=True, min=0.0, max=5000.0),
    ),
    key=("workout_id",),
    references={"user_id": "users", "class_id": "classes"},
    event_time="start_ts",
)

MUSIC_LIKES = Entity(
    name="music_likes",
    columns=(
        Column("user_id", pa.string(), is_id=True),
        Column("class_id", pa.string(), is_id=True),
        Column("liked_ts", TS),
    ),
    key=("user_id", "class_id", "liked_ts"),
    references={"user_id": "users", "class_id": "classes"},
    event_time="liked_ts",
)

BOOKMARKS = Entity(
    name="bookmarks",
    columns=(
        Column("user_id", pa.string(), is_id=True),
        Column("class_id", pa.string(), is_id=True),
        Column("bookmarked_ts", TS),
    ),
    key=("user_id", "class_id", "bookmarked_ts"),
    references={"user_id": "users", "class_id": "classes"},
    event_time="bookmarked_ts",
)

IMPRESSIONS = Entity(
    name="impressions",
    columns=(
        Column("impression_id", pa.string(), is_id=True),
        Column("user_id", pa.string(), is_id=True),
        Column("platform", pa.string(), accepted=PLATFORMS),
        Column("shown_ts", TS),
        Column("class_id", pa.string(), is_id=True),
        Column("position", pa.int32(), min=1, max=100),
    ),
    key=("impression_id",),
    references={"user_id": "users", "class_id": "classes"},
    event_time="shown_ts",
)

# Ingest order matters: referenced entities first.
ENTITIES: tuple[Entity, ...] = (
    USERS,
    INSTRUCTORS,
    CLASSES,
    WORKOUTS,
    MUSIC_LIKES,
    BOOKMARKS,
    IMPRESSIONS,
)
BY_NAME = {e.name: e for e in ENTITIES}

# Columns that ingest adds to every bronze table.
INGEST_COLUMNS = (
    pa.field("landing_date", pa.date32(), nullable=False),
    pa.field("_source_file", pa.string(), nullable=False),
    pa.field("_ingested_at", TS, nullable=False),
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("entity", pa.string(), nullable=False),
        pa.field("landing_date", pa.date32(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("row_number", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("record", pa.string(), nullable=False),
        pa.field("quarantined_at", TS, nullable=False),
    ]
)


def bronze_schema(entity: Entity) -> pa.Schema:
    return pa.schema(list(entity.schema) + list(INGEST_COLUMNS))
