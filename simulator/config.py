"""Simulation settings and the size presets (tiny for tests, small for the demo, medium and large
for scale)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class SimConfig:
    seed: int = 42
    start_date: date = date(2026, 9, 1)
    days: int = 60
    # users: an initial base (signed up over the previous two years) plus a trickle per day
    n_users_initial: int = 24_000
    new_users_per_day: float = 30.0
    n_instructors: int = 55
    # catalogue: an initial library released over the previous year plus dozens of classes a day
    n_classes_initial: int = 1_000
    new_classes_per_day: float = 30.0
    user_backfill_days: int = 730
    class_backfill_days: int = 365
    # class choice: "exact" softmax over every available class, or "sampled" (importance-
    # corrected softmax over `candidate_samples` classes drawn per visit; for the large size)
    choice: str = "exact"
    candidate_samples: int = 96
    impressions_per_visit: int = 6
    impression_visit_share: float = 0.7  # share of sessions started from the home screen

    @classmethod
    def preset(cls, name: str, **overrides) -> "SimConfig":
        if name not in SIZES:
            raise ValueError(f"unknown size {name!r}; choose from {sorted(SIZES)}")
        fields = dict(SIZES[name])
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)

    def replace(self, **changes) -> "SimConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["start_date"] = self.start_date.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SimConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown simulator settings {sorted(unknown)}")
        fields = dict(d)
        if "start_date" in fields:
            fields["start_date"] = date.fromisoformat(str(fields["start_date"]))
        return cls(**fields)

    def fingerprint(self, exclude: tuple[str, ...] = ("days",)) -> str:
        """A hash of everything that shapes the data (days excluded: a longer run extends a
        shorter one day for day)."""
        d = {k: str(v) for k, v in dataclasses.asdict(self).items() if k not in exclude}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


SIZES: dict[str, dict] = {
    # a few hundred users; generates in a few seconds (unit tests)
    "tiny": dict(
        days=14,
        n_users_initial=400,
        new_users_per_day=3,
        n_instructors=15,
        n_classes_initial=100,
        new_classes_per_day=4,
    ),
    # demo default: ~26k users, 55 instructors, 1000 + 30/day classes, ~0.9M workouts
    "small": dict(days=60),
    # scale, a quarter of large: 250k users, 100 instructors, 4000 + 40/day classes
    "medium": dict(
        days=90,
        n_users_initial=250_000,
        new_users_per_day=400,
        n_instructors=100,
        n_classes_initial=4_000,
        new_classes_per_day=40,
        choice="sampled",
    ),
    # scale: 1.2M users and ~55M workouts over 90 days, generated day by day (~25 s a day)
    "large": dict(
        days=90,
        n_users_initial=1_200_000,
        new_users_per_day=1_500,
        n_instructors=150,
        n_classes_initial=10_000,
        new_classes_per_day=80,
        choice="sampled",
    ),
}
