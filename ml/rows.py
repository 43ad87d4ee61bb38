"""What the daily batch inference produces: the home-screen rows, their settings and schemas.

A row (`RowSpec`) is the model scored under one context: "For you" at the user's usual hour,
"Start your morning with..." at 7h, "End your day with..." at 20h, "Recover from yesterday's
ride" as the class right after the user's last workout (`ml.context`). `ml.inference` runs a day;
`ml.row_scorer.BatchScorer` turns a batch of users into rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from lakehouse.mapped.mapping import EvaluationProtocol
from ml.datasets import FITNESS, Dataset
from ml.precision import PRECISIONS

# The recommendations table (one Delta partition per serve_date).
RECOMMENDATION_SCHEMA = pa.schema([
    ("serve_date", pa.date32()),
    ("feature_date", pa.date32()),
    ("user_id", pa.string()),
    ("platform", pa.string()),
    ("row_id", pa.string()),
    ("row_title", pa.string()),
    ("row_rank", pa.int32()),
    ("rank", pa.int32()),
    ("class_id", pa.string()),
    ("score", pa.float32()),
    ("model_version", pa.int32()),
    ("generated_at", pa.timestamp("us", tz="UTC")),
])
POPULAR_SCHEMA = pa.schema([
    ("serve_date", pa.date32()), ("platform", pa.string()), ("rank", pa.int32()),
    ("class_id", pa.string()), ("score", pa.float32()),
])
class InferenceError(RuntimeError):
    """Inference cannot run: no champion, no features for the day, no candidates."""


@dataclass(frozen=True)
class RowSpec:
    """A home-screen row: the model scored under one context.

    hour: the hour the row assumes; None = the user's usual hour on the platform (the
        platform's most common usual hour for a user who has none yet).
    after_last_workout: the recent-state row: only users who worked out on the feature date,
        scored as the class right after that workout (prev_* context = that workout).
    """

    row_id: str
    title: str
    hour: int | None = None
    after_last_workout: bool = False


DEFAULT_ROWS = (
    RowSpec("for_you", "For you"),
    RowSpec("morning", "Start your morning with...", hour=7),
    RowSpec("evening", "End your day with...", hour=20),
    RowSpec("recover", "Recover from yesterday's {activity}", after_last_workout=True),
)
# The rows that need no fitness column (mapped data's, `ml.datasets`).
MAPPED_ROWS = (RowSpec("for_you", "For you"),)


# retrieve then rank's defaults, for every layer that sets them (InferenceSettings, the Retriever,
# the inference asset's config): each list also ranks the platform's RETRIEVE_POPULAR most popular
# classes, the classes released in the last RETRIEVE_NEW_DAYS days (the tower's best
# RETRIEVE_NEW_MAX of them), and per affinity RETRIEVE_AFFINITY_CLASSES of its classes
RETRIEVE_POPULAR = 20
RETRIEVE_NEW_DAYS = 2
RETRIEVE_NEW_MAX = 40
RETRIEVE_AFFINITY_CLASSES = 20


@dataclass(kw_only=True)
class InferenceSettings:
    """rows / platforms / cap_column None: the dataset's defaults (`Dataset.rows`, `.platforms`,
    `.cap_column`; fitness: DEFAULT_ROWS, PLATFORMS, "instructor_id"; mapped: MAPPED_ROWS, every
    platform of the day's scoring_candidates, no cap).
    max_per_instructor: at most this many classes of one `cap_column` value per row (mapped: set
    e.g. "item_attr_artist")."""

    rows: tuple[RowSpec, ...] | None = None
    top_k: int = 10
    max_per_instructor: int = 2
    # no class the user took in these days (the evaluation's protocol); None: ever
    exclude_days: int | None = EvaluationProtocol.exclude_seen_days
    distinct_rows: bool = True  # a class shown in a higher row is not repeated lower on the screen
    users_per_batch: int = 512
    # the large matmuls in bfloat16 (~1.8x faster where the hardware has bf16, 99.4% of the
    # top-10 lists equal to fp32), fp32 (exact scores), or auto: the faster of the two on this
    # machine (a CPU without native bf16 runs it ~40x slower; `ml.precision`)
    precision: str = "auto"
    popular_k: int = 20
    popular_days: int = 7
    platforms: tuple[str, ...] | None = None
    dataset: Dataset = FITNESS
    cap_column: str | None = None
    # retrieve then rank: the ranker scores each (user, platform, row) list's `retrieve` nearest
    # classes of the two-tower's index plus the platform's `retrieve_popular` popular classes and
    # those released in the last `retrieve_new_days` (`ml.retrieval`); None: every candidate.
    # retrieve_new_max: of those new classes, the tower's best this many per list (None: all);
    # a bound on the pairs per list when the catalogue releases many classes a day
    retrieve: int | None = None
    retrieve_popular: int = RETRIEVE_POPULAR
    retrieve_new_days: int = RETRIEVE_NEW_DAYS
    retrieve_new_max: int | None = RETRIEVE_NEW_MAX
    # retrieve_similar: also each recent item's this many nearest classes by the ranker's
    # co-occurrence neighbours (0: none)
    retrieve_similar: int = 0
    # retrieve_affinity: also, for each of the user's this many strongest affinities (an
    # instructor), the tower's best `retrieve_affinity_classes` of its classes (0: none)
    retrieve_affinity: int = 0
    retrieve_affinity_classes: int = RETRIEVE_AFFINITY_CLASSES

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = self.dataset.rows
        if self.platforms is None:
            self.platforms = self.dataset.platforms
        if self.cap_column is None:
            self.cap_column = self.dataset.cap_column
        self.dataset.check_rows(self.rows)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.retrieve is not None and self.retrieve < 1:
            raise ValueError(f"retrieve must be >= 1 classes per list, or None (all), got {self.retrieve}")
        if self.retrieve_new_max is not None and self.retrieve_new_max < 0:
            raise ValueError(f"retrieve_new_max must be >= 0 new classes per list, or None (all), "
                             f"got {self.retrieve_new_max}")
        if self.retrieve_similar < 0:
            raise ValueError(f"retrieve_similar must be >= 0 classes per recent item, got {self.retrieve_similar}")
        if self.retrieve_affinity < 0 or self.retrieve_affinity_classes < 1:
            raise ValueError(f"retrieve_affinity must be >= 0 affinities per list and retrieve_affinity_classes "
                             f">= 1 classes each, got {self.retrieve_affinity} and {self.retrieve_affinity_classes}")
        if self.top_k < 1 or self.max_per_instructor < 1 or self.users_per_batch < 1:
            raise ValueError("top_k, max_per_instructor and users_per_batch must be >= 1")
        if len({r.row_id for r in self.rows}) != len(self.rows):
            raise ValueError("row ids must be unique")


@dataclass
class DayInputs:
    """What every batch shares: candidates per platform, popular fallback, default hours."""

    feature_date: dt.date
    serve_date: dt.date
    candidates: dict[str, pl.DataFrame]  # platform -> class_id + catalogue + class_ popularity
    popular: pl.DataFrame  # POPULAR_SCHEMA
    default_hour: dict[str, int]
    n_users: int


__all__ = [
    "DEFAULT_ROWS", "MAPPED_ROWS", "POPULAR_SCHEMA", "RECOMMENDATION_SCHEMA", "DayInputs",
    "InferenceError", "InferenceSettings", "RowSpec",
]
