"""The entities of the platform: instructors, classes and users, with their public attributes
(what the app exports) and their hidden latents (what only the truth knows).

Everything is derived from the seed. Entities arrive in groups: group -1 is the initial base
(users who signed up over the previous two years, the catalogue released over the previous
year, all instructors), group d the users and classes that arrive on day d. Each group draws
from its own random stream, so the world for 61 days is the world for 60 days plus day 60's
group: a longer horizon never changes an earlier day.

Times are integer seconds since start_date 00:00 UTC (negative: before day 0)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from . import vocab as V
from .config import SimConfig

DAY = 86_400
MAX_FAV = 3
# stream ids for np.random.SeedSequence: one per kind of randomness
S_INSTRUCTORS, S_CLASSES, S_USERS = 1, 2, 3


def stream(seed: int, kind: int, group: int) -> np.random.Generator:
    """A random stream that depends only on (seed, kind, group); group -1 (initial) maps to 0."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, kind, group + 1])))


@dataclass
class Instructors:
    primary: np.ndarray  # discipline code
    popularity: np.ndarray  # hidden: log-scale pull of the instructor's classes
    output: np.ndarray  # relative number of classes released
    joined_sec: np.ndarray
    name: list


@dataclass
class Classes:
    instructor: np.ndarray
    discipline: np.ndarray
    equipment: np.ndarray
    dur_idx: np.ndarray  # index into vocab.DURATIONS
    difficulty: np.ndarray  # 0..10, one decimal
    body_focus: np.ndarray
    genre: np.ndarray
    release_sec: np.ndarray
    quality: np.ndarray  # hidden: how good the class is (log-scale)

    @property
    def duration(self) -> np.ndarray:
        return V.DURATIONS[self.dur_idx]

    @property
    def release_day(self) -> np.ndarray:
        return np.floor_divide(self.release_sec, DAY)

    def __len__(self) -> int:
        return len(self.instructor)


@dataclass
class Users:
    signup_sec: np.ndarray
    birth_year: np.ndarray  # -1: not given
    gender: np.ndarray  # 0 F, 1 M, 2 X, -1 not given
    country: np.ndarray
    level: np.ndarray  # public fitness level 0..2
    owns_bike: np.ndarray
    owns_tread: np.ndarray
    # hidden latents
    fitness: np.ndarray  # int 0..10: the difficulty the user is comfortable with
    affinity: np.ndarray  # (n, disciplines) log-preference
    fav_instr: np.ndarray  # (n, MAX_FAV) instructor codes, -1 none
    fav_weight: np.ndarray  # (n, MAX_FAV)
    taste: np.ndarray  # (n, genres) music taste
    chain: np.ndarray  # propensity to chain a second class
    rate: np.ndarray  # sessions per week while active
    churn_day: np.ndarray  # day from which the user stops (large: never)
    hour1: np.ndarray  # habitual hour
    hour2: np.ndarray  # second habit
    minutes: np.ndarray  # typical minutes available on a weekday
    platform_p: np.ndarray  # (n, 3) P(bike, tread, app) for a session

    @property
    def signup_day(self) -> np.ndarray:
        return np.floor_divide(self.signup_sec, DAY)

    def __len__(self) -> int:
        return len(self.signup_sec)


def _concat(parts: list, cls):
    return cls(**{f.name: _cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})


def _cat(xs):
    return sum(xs, []) if isinstance(xs[0], list) else np.concatenate(xs)


def _choice_rows(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a probability matrix (vectorized)."""
    cum = np.cumsum(p, axis=1)
    r = rng.random(len(p))[:, None] * cum[:, -1:]
    return np.minimum((cum < r).sum(axis=1), p.shape[1] - 1)


def make_instructors(cfg: SimConfig) -> Instructors:
    rng = stream(cfg.seed, S_INSTRUCTORS, -1)
    n = cfg.n_instructors
    # every discipline has at least one instructor, the rest follow the platform's mix
    primary = np.concatenate(
        [np.arange(len(V.DISCIPLINES)), rng.choice(len(V.DISCIPLINES), n, p=V.INSTRUCTOR_DISCIPLINE_P)]
    )[:n]
    primary = rng.permutation(primary)
    popularity = rng.normal(0.0, 0.7, n)
    output = V.OUTPUT_RATE[primary] * rng.lognormal(0.0, 0.3, n)
    joined = -rng.integers(cfg.class_backfill_days * DAY, 3 * 365 * DAY, n)
    first = rng.integers(0, len(V.FIRST_NAMES), n)
    last = rng.integers(0, len(V.LAST_NAMES), n)
    name = [f"{V.FIRST_NAMES[a]} {V.LAST_NAMES[b]}" for a, b in zip(first, last)]
    return Instructors(primary, popularity, output, joined.astype(np.int64), name)


def _classes_group(cfg: SimConfig, ins: Instructors, group: int) -> Classes:
    rng = stream(cfg.seed, S_CLASSES, group)
    if group < 0:
        n = cfg.n_classes_initial
        day = rng.integers(-cfg.class_backfill_days, 0, n)
    else:
        n = int(rng.poisson(cfg.new_classes_per_day))
        day = np.full(n, group)
    # classes go live on the hour, between 05:00 and 20:00
    release = np.sort(day * DAY + rng.integers(5, 21, n) * 3600)
    instr = rng.choice(len(ins.primary), n, p=ins.output / ins.output.sum())
    disc = ins.primary[instr].copy()
    secondary = rng.random(n) > V.PRIMARY_SHARE
    for d in np.unique(disc[secondary]):  # loop over disciplines (9), not classes
        rows = np.flatnonzero(secondary & (disc == d))
        options = np.array([V.D[x] for x in V.SECONDARY[V.DISCIPLINES[d]]])
        disc[rows] = rng.choice(options, len(rows))
    dur_idx = _choice_rows(rng, V.DURATION_P[disc])
    bf = _choice_rows(rng, V.BODY_FOCUS_P[disc])
    genre = _choice_rows(rng, V.GENRE_P[disc])
    difficulty = np.round(np.clip(rng.normal(V.DIFFICULTY_MEAN[disc], 1.6), 0.5, 9.8), 1)
    quality = rng.normal(0.0, 1.2, n)
    return Classes(
        instructor=instr.astype(np.int32),
        discipline=disc.astype(np.int8),
        equipment=V.DISCIPLINE_EQUIPMENT[disc].astype(np.int8),
        dur_idx=dur_idx.astype(np.int8),
        difficulty=difficulty,
        body_focus=bf.astype(np.int8),
        genre=genre.astype(np.int8),
        release_sec=release.astype(np.int64),
        quality=quality.astype(np.float32),
    )


# base log-preference per discipline across the population
AFFINITY_BASE = np.array([0.0, -0.3, -0.5, 0.2, 0.0, 0.1, -0.2, -0.2, -0.4])
HOUR_SLOTS = np.array([6, 7, 8, 9, 12, 17, 18, 19, 20, 21])
HOUR_SLOT_P = np.array([0.13, 0.12, 0.09, 0.05, 0.10, 0.11, 0.14, 0.12, 0.08, 0.06])


def _users_group(cfg: SimConfig, ins: Instructors, group: int) -> Users:
    rng = stream(cfg.seed, S_USERS, group)
    if group < 0:
        n = cfg.n_users_initial
        signup = np.sort(rng.integers(-cfg.user_backfill_days * DAY, 0, n))
    else:
        n = int(rng.poisson(cfg.new_users_per_day))
        signup = np.sort(group * DAY + rng.integers(0, DAY, n))
    nd = len(V.DISCIPLINES)
    birth = np.clip(rng.normal(1987, 11, n), 1945, 2007).astype(np.int32)
    birth[rng.random(n) < 0.04] = -1
    gender = rng.choice(np.array([0, 1, 2, -1]), n, p=[0.50, 0.46, 0.01, 0.03])
    country = rng.choice(len(V.COUNTRIES), n, p=V.COUNTRY_P)
    level = rng.choice(3, n, p=[0.35, 0.45, 0.20])
    fitness = np.choose(level, [rng.integers(1, 5, n), rng.integers(4, 8, n), rng.integers(6, 10, n)])
    owns_bike = rng.random(n) < 0.55
    owns_tread = rng.random(n) < np.where(owns_bike, 0.22, 0.18)

    affinity = AFFINITY_BASE + rng.normal(0.0, 1.0, (n, nd))
    affinity[:, V.D["cycling"]] += 2.0 * owns_bike
    affinity[:, V.D["running"]] += 1.2 * owns_tread
    affinity[:, V.D["walking"]] += 0.8 * owns_tread

    # favourite instructors: drawn without replacement (Gumbel top-k), pulled toward popular
    # instructors who teach what the user likes
    fav = np.empty((n, MAX_FAV), np.int64)
    for lo in range(0, n, 50_000):  # chunks of users keep (users x instructors) small at scale
        a = affinity[lo : lo + 50_000]
        logits = ins.popularity[None, :] + 1.2 * a[:, ins.primary]
        logits += rng.gumbel(size=logits.shape)
        top = np.argpartition(-logits, MAX_FAV - 1, axis=1)[:, :MAX_FAV]
        order = np.argsort(-np.take_along_axis(logits, top, 1), axis=1)
        fav[lo : lo + 50_000] = np.take_along_axis(top, order, 1)
    k = rng.choice([1, 2, 3], n, p=[0.3, 0.45, 0.25])
    fav_w = np.array([3.3, 2.2, 1.4]) * rng.lognormal(0.0, 0.2, (n, MAX_FAV))
    keep = np.arange(MAX_FAV)[None, :] < k[:, None]
    fav = np.where(keep, fav, -1)
    fav_w = np.where(keep, fav_w, 0.0)

    taste = rng.normal(0.0, 0.8, (n, len(V.GENRES)))
    taste[np.arange(n), rng.choice(len(V.GENRES), n, p=V.GENRE_P.mean(0))] += 1.5

    # activity: regulars (2-5.5 sessions a week), occasional users, churners; new users churn more
    kind = rng.choice(3, n, p=[0.22, 0.62, 0.16] if group >= 0 else [0.80, 0.13, 0.07])
    rate = np.where(
        kind == 1, rng.uniform(0.3, 1.5, n), np.clip(rng.lognormal(np.log(3.3), 0.25, n), 2.0, 5.5)
    )
    start = max(group, 0)
    churn = np.where(kind == 2, start + rng.exponential(35.0, n).astype(np.int64) + 7, 1 << 30)

    slots = rng.choice(len(HOUR_SLOTS), (n, 2), p=HOUR_SLOT_P)
    minutes = np.clip(rng.lognormal(np.log(32), 0.3, n), 10, 75)
    w = np.stack(
        [
            np.where(owns_bike, np.exp(rng.normal(1.3, 0.5, n)), 0.0),
            np.where(owns_tread, np.exp(rng.normal(0.9, 0.5, n)), 0.0),
            np.ones(n),
        ],
        axis=1,
    )
    return Users(
        signup_sec=signup.astype(np.int64),
        birth_year=birth,
        gender=gender.astype(np.int8),
        country=country.astype(np.int8),
        level=level.astype(np.int8),
        owns_bike=owns_bike,
        owns_tread=owns_tread,
        fitness=fitness.astype(np.int8),
        affinity=affinity.astype(np.float32),
        fav_instr=fav.astype(np.int32),
        fav_weight=fav_w.astype(np.float32),
        taste=taste.astype(np.float32),
        chain=rng.normal(0.0, 0.6, n).astype(np.float32),
        rate=rate.astype(np.float32),
        churn_day=churn.astype(np.int64),
        hour1=HOUR_SLOTS[slots[:, 0]].astype(np.int8),
        hour2=HOUR_SLOTS[slots[:, 1]].astype(np.int8),
        minutes=minutes.astype(np.float32),
        platform_p=(w / w.sum(1, keepdims=True)).astype(np.float32),
    )


class World:
    """All entities for days [0, n_days). Entity codes are row numbers; ids are derived."""

    def __init__(self, cfg: SimConfig, n_days: int | None = None):
        self.cfg = cfg
        self.n_days = cfg.days if n_days is None else n_days
        self.instructors = make_instructors(cfg)
        groups = range(-1, self.n_days)
        cparts = [_classes_group(cfg, self.instructors, g) for g in groups]
        uparts = [_users_group(cfg, self.instructors, g) for g in groups]
        # offsets[g + 1] = first code of group g (group -1 starts at 0)
        self.class_offsets = np.cumsum([0] + [len(p) for p in cparts])
        self.user_offsets = np.cumsum([0] + [len(p) for p in uparts])
        self.classes = _concat(cparts, Classes)
        self.users = _concat(uparts, Users)

    # entities that exist by the end of day d (a prefix: codes are ordered by arrival)
    def n_users_by(self, day: int) -> int:
        return int(self.user_offsets[day + 2])

    def n_classes_by(self, day: int) -> int:
        return int(self.class_offsets[day + 2])

    def users_of_group(self, group: int) -> slice:
        return slice(int(self.user_offsets[group + 1]), int(self.user_offsets[group + 2]))

    def classes_of_group(self, group: int) -> slice:
        return slice(int(self.class_offsets[group + 1]), int(self.class_offsets[group + 2]))

    # string ids, fixed width so that they sort like their codes
    @property
    def user_width(self) -> int:
        return max(7, len(str(len(self.users))))

    @property
    def class_width(self) -> int:
        return max(6, len(str(len(self.classes))))

    @property
    def instructor_width(self) -> int:
        return max(3, len(str(len(self.instructors.primary))))

    def user_ids(self, codes) -> np.ndarray:
        return _ids("u", codes, self.user_width)

    def class_ids(self, codes) -> np.ndarray:
        return _ids("c", codes, self.class_width)

    def instructor_ids(self, codes) -> np.ndarray:
        return _ids("i", codes, self.instructor_width)

    def user_codes(self, ids) -> np.ndarray:
        return _codes(ids, "u")

    def class_codes(self, ids) -> np.ndarray:
        return _codes(ids, "c")


def _ids(prefix: str, codes, width: int) -> np.ndarray:
    codes = np.asarray(codes)
    return np.char.add(prefix, np.char.zfill(codes.astype(str), width)).astype(object)


def _codes(ids, prefix: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=str)
    if ids.size and not np.all(np.char.startswith(ids, prefix)):
        raise ValueError(f"ids must start with {prefix!r}")
    return np.char.lstrip(ids, prefix).astype(np.int64) if ids.size else np.zeros(0, np.int64)
