"""The planted preference structure: what really makes a user take a class.

The pipeline never reads this module; evaluation does, to build an oracle. Everything here is
reconstructible from the config alone (`TruePreferences.from_config(cfg)`); the per-user state
at the start of a day comes from re-simulating (`simulator.state_at`) or from the observed
workouts (`behaviour.UserState.from_workouts`), which agree exactly.

A user u, in context x (platform, hour, weekday, minutes available, and recent state), takes
class c with probability softmax_c(U(u, c, x)) over the classes offered on the platform at that
moment. The utility is a sum of terms (log-odds scale; a term of +1 multiplies the odds by 2.7):

  U = affinity[u, disc]                 user x discipline taste, N(0, 1) per pair; +2.0 cycling
                                        for bike owners, +1.2 running / +0.8 walking for tread owners
    + TIME_OF_DAY[hour bucket, disc]    yoga/stretching mornings (+0.9..+1.1), meditation nights
                                        (+1.8), cycling evenings (+0.8)
    + PLATFORM[platform, disc]          bike: cycling +3.0; tread: running +3.0, walking +2.7;
                                        app: broad mix (meditation +1.0, cardio +1.3),
                                        cycling/running -2 (no hardware)
    + favourite instructors             1-3 per user, +3.3 / +2.2 / +1.4 (x lognormal jitter)
    + instructor popularity             N(0, 0.7) per instructor
    + class quality                     N(0, 1.2) per class
    + novelty                           +2.2 * exp(-age_days / 8)
    + duration fit                      -2.5 * relu(dur - m) / m - 0.5 * |ln(dur / m)|, m = minutes
                                        available (per-user base ~32 min x hour factor 0.65-1.05
                                        x lognormal(0, 0.25); weekends x1.5)
    + difficulty fit                    -0.12 * relu(difficulty - fitness - 0.5)^2
                                        - 0.06 * relu(fitness - difficulty - 2)
    + music                             0.4 * taste[u, genre] (taste N(0, 0.8), +1.5 on a favourite)
    + in-session chaining (2nd class)   CHAIN[prev disc, disc] (after a ride/run: stretching +2.2;
                                        after yoga: meditation +1.5 ...), after lower-body
                                        strength: upper-body strength +1.0, lower -1.0; and
                                        -0.05/min of duration (the rest of the time is short)
    + recovery (last workout < 40 h)    strength of the same body focus (lower/upper) -0.8
    + repeat                            -3.0 for a class among the user's last 8 workouts

Beyond the choice, the context itself is planted: a user visits with probability rate/7 per
day (regulars 2-5.5 sessions a week; x weekday factor, x1.3 in the first two weeks after
signing up, x0.7 the day after a workout, else x1.1; churners stop), at a habitual hour (70% the
first habit, else the second, +-1 h; weekends one hour later for early birds), on a platform
drawn from per-user platform weights (owners mostly use their hardware). After a class, a
second one follows with P = sigmoid(-1.35 + CHAIN_P[disc] + chain propensity N(0, 0.6) +
0.6 [>= 10 min left] - 0.8 [not completed]) (a third with 0.35 x that); after the bike/tread it
is taken on the app 60/70% of the time. Completion: sigmoid(2.3 - 0.35 relu(difficulty -
fitness) - 2 relu(dur - m)/m + 0.4 [favourite instructor]). Music like: sigmoid(-2.4 +
1.6 taste[u, genre] + 0.8 completed).

Over 400 lines: the whole utility model in one place, term by term, as the design describes it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import vocab as V
from .config import SimConfig
from .world import DAY, World

ND, NB, NG, NDUR = len(V.DISCIPLINES), len(V.BODY_FOCUS), len(V.GENRES), len(V.DURATIONS)
_d = V.D

# hour -> bucket: 0 early (4-6), 1 morning (7-10), 2 midday (11-13), 3 afternoon (14-16),
# 4 evening (17-20), 5 night (21-3)
HOUR_BUCKET = np.array([5] * 4 + [0] * 3 + [1] * 4 + [2] * 3 + [3] * 3 + [4] * 4 + [5] * 3)
#                 cyc   run   walk  str   yoga  strch medit card  pil
TIME_OF_DAY = np.array(
    [
        [0.0, 0.3, 0.0, 0.0, 0.9, 1.1, -0.2, 0.1, 0.2],  # early
        [-0.2, 0.2, 0.3, 0.0, 1.0, 1.1, 0.0, 0.0, 0.3],  # morning
        [0.0, 0.1, 0.4, 0.3, 0.0, 0.0, -0.3, 0.3, 0.2],  # midday
        [0.3, 0.1, 0.2, 0.3, -0.3, -0.2, -0.4, 0.2, 0.0],  # afternoon
        [0.8, 0.2, -0.1, 0.3, -0.5, -0.3, -0.3, 0.2, -0.1],  # evening
        [-0.6, -0.6, 0.0, -0.6, 0.2, -0.1, 1.8, -0.6, -0.3],  # night
    ],
    np.float32,
)
PLATFORM = np.array(
    [
        [3.0, -3.0, -3.0, -0.8, -1.5, 0.2, -1.5, -1.0, -1.5],  # bike
        [-3.0, 3.0, 2.7, -0.8, -1.5, 0.0, -1.5, -1.0, -1.5],  # tread
        [-2.0, -2.0, -1.0, 0.6, 0.5, 0.4, 1.0, 1.3, 0.4],  # app: each of its mix >= 5%
    ],
    np.float32,
)
# in-session chaining: CHAIN[previous discipline, next discipline]
CHAIN = np.zeros((ND, ND), np.float32)
for _prev, _bonus in {
    "cycling": {"stretching": 2.2, "strength": 0.6, "yoga": 0.3, "cycling": -1.0},
    "running": {"stretching": 2.2, "strength": 0.5, "walking": 0.5, "running": -1.0},
    "walking": {"stretching": 1.2, "strength": 0.5},
    "strength": {"stretching": 1.4, "strength": 0.3, "cardio": 0.3, "yoga": 0.2},
    "yoga": {"meditation": 1.5, "stretching": 0.3, "yoga": -0.5},
    "stretching": {"meditation": 0.8, "strength": 0.3, "stretching": -1.0},
    "meditation": {"meditation": -0.5, "yoga": 0.5},
    "cardio": {"stretching": 1.6, "strength": 0.6},
    "pilates": {"stretching": 1.0, "meditation": 0.3},
}.items():
    for _next, _b in _bonus.items():
        CHAIN[_d[_prev], _d[_next]] = _b
CHAIN_SHORT = 0.05  # per minute of the second class's duration
# probability of chaining a second class (log-odds by first discipline)
CHAIN_P = np.array([0.5, 0.5, 0.0, 0.3, -0.4, -1.5, -2.0, 0.3, -0.2], np.float32)
CHAIN_BASE = -1.35
SWITCH_TO_APP = np.array([0.6, 0.7, 0.0])  # second class on the app, by first platform
W_FAV_BONUS_COMPLETE = 0.4
W_MUSIC = 0.4
W_REPEAT = -3.0
RECENT = 8  # how many past workouts the repeat penalty remembers
W_RECOVERY, RECOVERY_HOURS = -0.8, 40.0
NOVELTY_A, NOVELTY_TAU = 2.2, 8.0
# minutes available: per-user base x weekend x hour factor x lognormal(0, 0.25)
WEEKEND_MINUTES = 1.5
HOUR_MINUTES = np.array([0.8] * 4 + [0.85] * 3 + [0.9] * 4 + [0.65] * 3 + [0.9] * 3 + [1.05] * 4 + [0.75] * 3)
# visit probability by weekday (Mon..Sun)
WEEKDAY_VISIT = np.array([1.12, 1.05, 1.0, 0.97, 0.82, 0.97, 1.07])
HABIT_P = 0.7


def platform_code(p) -> np.ndarray:
    """Platform names or codes -> codes (0 bike, 1 tread, 2 app)."""
    a = np.asarray(p)
    if a.dtype.kind in "OUS":
        lut = {name: i for i, name in enumerate(V.PLATFORMS)}
        return np.vectorize(lut.__getitem__, otypes=[np.int64])(a) if a.ndim else np.int64(lut[str(a)])
    return a.astype(np.int64)


@dataclass
class Context:
    """Where and when a choice happens; every field is a scalar or an array of one per row.

    `day` (day index since start_date) sets the classes' age (novelty); `time_sec` (seconds since
    start_date), when given, hides classes released later that day. The optional state fields:
    prev_* describe the class just finished in this session (chaining); last_* and
    hours_since_last the user's last workout before this session (recovery); recent_classes
    (rows x k class codes, -1 none) the user's latest workouts (repeat penalty)."""

    platform: object
    hour: object
    weekday: object
    minutes_available: object
    day: int
    time_sec: object = None
    prev_discipline: object = None
    prev_body_focus: object = None
    prev_duration: object = None
    last_discipline: object = None
    last_body_focus: object = None
    hours_since_last: object = None
    recent_classes: object = None

    def rows(self, n: int) -> "Context":
        """Broadcast every field to n rows (platform names -> codes)."""
        def b(x, dtype):
            return None if x is None else np.broadcast_to(np.asarray(x, dtype=dtype), (n,))

        rc = self.recent_classes
        if rc is not None:
            rc = np.asarray(rc)
            rc = rc if rc.dtype.kind == "i" else rc.astype(np.int64)
            rc = np.broadcast_to(rc if rc.ndim == 2 else rc[None, :], (n, rc.shape[-1]))
        return Context(
            platform=np.broadcast_to(platform_code(self.platform), (n,)),
            hour=b(self.hour, np.int64),
            weekday=b(self.weekday, np.int64),
            minutes_available=b(self.minutes_available, np.float32),
            day=int(self.day),
            time_sec=b(self.time_sec, np.int64),
            prev_discipline=b(self.prev_discipline, np.int64),
            prev_body_focus=b(self.prev_body_focus, np.int64),
            prev_duration=b(self.prev_duration, np.float32),
            last_discipline=b(self.last_discipline, np.int64),
            last_body_focus=b(self.last_body_focus, np.int64),
            hours_since_last=b(self.hours_since_last, np.float32),
            recent_classes=rc,
        )

    def take(self, rows: np.ndarray) -> "Context":
        """The context of a subset of rows (fields already broadcast)."""
        kw = {}
        for k, v in self.__dict__.items():
            kw[k] = v[rows] if isinstance(v, np.ndarray) and v.ndim >= 1 else v
        return replace(self, **kw)


def softmax_rows(u: np.ndarray) -> np.ndarray:
    e = np.exp(u - u.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class TruePreferences:
    """The ground truth, vectorized over many users x classes."""

    def __init__(self, world: World):
        self.world = world
        self.cfg = world.cfg
        c, ins = world.classes, world.instructors
        self._class_base = (c.quality + ins.popularity[c.instructor]).astype(np.float32)
        # profile key of a class: (discipline, body focus, duration, genre); utility terms that
        # depend on the context are computed once per key, then gathered per class
        self.class_key = (((c.discipline.astype(np.int64) * NB + c.body_focus) * NDUR + c.dur_idx) * NG + c.genre)
        self._static: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(cls, cfg: SimConfig, n_days: int | None = None) -> "TruePreferences":
        return cls(World(cfg, n_days))

    # ---- ids ---------------------------------------------------------------------------
    def _users(self, users) -> np.ndarray:
        a = np.asarray(users)
        return self.world.user_codes(a) if a.dtype.kind in "OUS" else a.astype(np.int64)

    def _classes(self, classes) -> np.ndarray:
        a = np.asarray(classes)
        if a.dtype.kind in "OUS":
            return self.world.class_codes(a.ravel()).reshape(a.shape)
        return a if a.dtype.kind in "iu" else a.astype(np.int64)  # int32 halves memory traffic at scale

    # ---- per-class terms ---------------------------------------------------------------
    def static(self, day: int) -> np.ndarray:
        """Quality + instructor popularity + novelty on `day`; -inf for classes not yet out."""
        if day not in self._static:
            age = day - self.world.classes.release_day
            s = self._class_base + NOVELTY_A * np.exp(-np.maximum(age, 0) / NOVELTY_TAU)
            self._static = {day: np.where(age >= 0, s, -np.inf).astype(np.float32)}
        return self._static[day]

    def offered(self, platform: int, day: int, time_sec: int | None = None) -> np.ndarray:
        """Class codes offered on a platform on a day (released by the end of it, or by time_sec)."""
        c = self.world.classes
        n = self.world.n_classes_by(day)
        ok = np.isin(c.equipment[:n], V.PLATFORM_OFFERS[int(platform)])
        if time_sec is not None:
            ok &= c.release_sec[:n] <= time_sec
        return np.flatnonzero(ok)

    # ---- the utility -------------------------------------------------------------------
    def utility(self, users, classes, context: Context) -> np.ndarray:
        """U[i, j] for user users[i] and class classes[j] (classes 1-D, shared by all rows) or
        classes[i, j] (2-D, a candidate list per row), in context row i. float32; -inf where a
        class is not available yet."""
        u = self._users(users)
        c = self._classes(classes)
        n = len(u)
        x = context.rows(n)
        w = self.world
        cl, us = w.classes, w.users

        # (rows x discipline x body focus) terms
        e_d = us.affinity[u] + TIME_OF_DAY[HOUR_BUCKET[x.hour % 24]] + PLATFORM[x.platform]
        e_db = np.repeat(e_d[:, :, None], NB, axis=2)
        if x.prev_discipline is not None:
            has = x.prev_discipline >= 0
            e_db += np.where(has[:, None], CHAIN[np.maximum(x.prev_discipline, 0)], 0)[:, :, None]
            if x.prev_body_focus is not None:
                after_strength = has & (x.prev_discipline == _d["strength"])
                e_db[:, _d["strength"], :] += self._strength_pair(after_strength, x.prev_body_focus)
        if x.last_body_focus is not None and x.hours_since_last is not None:
            recent = x.hours_since_last < RECOVERY_HOURS
            for bf in (V.BF["lower"], V.BF["upper"]):
                hit = recent & (x.last_body_focus == bf)
                if x.last_discipline is not None:
                    hit &= x.last_discipline == _d["strength"]
                e_db[:, _d["strength"], bf] += W_RECOVERY * hit
        e_db = e_db.reshape(n, ND * NB)
        # (rows x duration): fit to the minutes available
        m = np.maximum(x.minutes_available, 1.0)[:, None]
        dur = V.DURATIONS[None, :].astype(np.float32)
        e_dur = -2.5 * np.maximum(dur - m, 0) / m - 0.5 * np.abs(np.log(dur / m))
        if x.prev_discipline is not None:
            e_dur -= CHAIN_SHORT * dur * (x.prev_discipline >= 0)[:, None]
        e_g = W_MUSIC * us.taste[u]
        fav = np.zeros((n, len(w.instructors.primary)), np.float32)
        for k in range(us.fav_instr.shape[1]):  # favourites are distinct within a row
            fav[np.arange(n), np.maximum(us.fav_instr[u, k], 0)] += us.fav_weight[u, k]
        fit = us.fitness[u].astype(np.float32)
        stat = self.static(x.day)

        if c.ndim == 1:
            keys, inv = _compact(self.class_key[c], ND * NB * NDUR * NG)
            kg, rest = keys % NG, keys // NG
            kdur, kdb = rest % NDUR, rest // NDUR
            # np.take keeps rows contiguous (a[:, idx] would return a Fortran-ordered array)
            e_k = np.take(e_db, kdb, axis=1) + np.take(e_dur, kdur, axis=1) + np.take(e_g, kg, axis=1)
            out = np.take(e_k, inv, axis=1)
            out += np.take(fav, cl.instructor[c], axis=1)
            # per fitness level (0..10): difficulty fit + the class's static term, one gather
            levels = np.arange(11, dtype=np.float32)[:, None]
            out += (_difficulty_fit(cl.difficulty[c][None, :], levels) + stat[c])[us.fitness[u]]
        else:
            t = np.take_along_axis
            out = t(e_db, (cl.discipline[c].astype(np.int64) * NB + cl.body_focus[c]), 1)
            out += t(e_dur, cl.dur_idx[c].astype(np.int64), 1)
            out += t(e_g, cl.genre[c].astype(np.int64), 1)
            out += t(fav, cl.instructor[c].astype(np.int64), 1)
            out += _difficulty_fit(cl.difficulty[c], fit[:, None])
            out += stat[c]
        out = out.astype(np.float32, copy=False)

        if x.recent_classes is not None:
            self._penalize_recent(out, c, x.recent_classes)
        if x.time_sec is not None:
            late = cl.release_sec[c] > (x.time_sec[:, None] if c.ndim == 2 else x.time_sec.min())
            if late.any():  # only classes released during the day can be late
                if c.ndim == 1:
                    cols = np.flatnonzero(late)
                    hide = cl.release_sec[c[cols]][None, :] > x.time_sec[:, None]
                    out[:, cols] = np.where(hide, -np.inf, out[:, cols])
                else:
                    out[late] = -np.inf
        return out

    @staticmethod
    def _strength_pair(prev_strength: np.ndarray, prev_bf: np.ndarray) -> np.ndarray:
        """After lower-body strength, upper body (+1.0) rather than lower (-1.0), and vice versa."""
        t = np.zeros((len(prev_bf), NB), np.float32)
        lo, up = V.BF["lower"], V.BF["upper"]
        for a, b in ((lo, up), (up, lo)):
            hit = prev_strength & (prev_bf == a)
            t[hit, b] += 1.0
            t[hit, a] -= 1.0
        return t

    @staticmethod
    def _penalize_recent(out: np.ndarray, c: np.ndarray, recent: np.ndarray) -> None:
        if c.ndim == 2:
            for k in range(recent.shape[1]):
                out += W_REPEAT * (c == recent[:, k : k + 1])
            return
        col = np.full(int(c.max()) + 1 if c.size else 1, -1)
        col[c] = np.arange(len(c))
        r = np.where((recent >= 0) & (recent < len(col)), recent, 0)
        pos = np.where(recent >= 0, col[r], -1)
        rows, ks = np.nonzero(pos >= 0)
        # a class repeated twice in the history counts once
        flat = np.unique(rows * out.shape[1] + pos[rows, ks])
        out[flat // out.shape[1], flat % out.shape[1]] += W_REPEAT

    def choice_probabilities(self, users, classes, context: Context) -> np.ndarray:
        return softmax_rows(self.utility(users, classes, context))

    # ---- the rest of the planted behaviour ----------------------------------------------
    def chain_probability(self, users, first_classes, completed, minutes_left) -> np.ndarray:
        u, c = self._users(users), self._classes(first_classes)
        z = (
            CHAIN_BASE
            + CHAIN_P[self.world.classes.discipline[c]]
            + self.world.users.chain[u]
            + 0.6 * (np.asarray(minutes_left) >= 10)
            - 0.8 * ~np.asarray(completed, bool)
        )
        return 1 / (1 + np.exp(-z))

    def completion_probability(self, users, classes, minutes_available) -> np.ndarray:
        u, c = self._users(users), self._classes(classes)
        w = self.world
        cl = w.classes
        over = np.maximum(cl.difficulty[c] - w.users.fitness[u], 0)
        m = np.maximum(np.asarray(minutes_available, np.float32), 1)
        late = np.maximum(cl.duration[c] - m, 0) / m
        fav = (w.users.fav_instr[u] == cl.instructor[c][:, None]).any(1)
        z = 2.3 - 0.35 * over - 2.0 * late + W_FAV_BONUS_COMPLETE * fav
        return 1 / (1 + np.exp(-z))

    def like_probability(self, users, classes, completed) -> np.ndarray:
        u, c = self._users(users), self._classes(classes)
        taste = self.world.users.taste[u, self.world.classes.genre[c]]
        z = -2.4 + 1.6 * taste + 0.8 * np.asarray(completed, np.float32)
        return 1 / (1 + np.exp(-z))

    def weekday(self, day: int) -> int:
        return (self.cfg.start_date.weekday() + day) % 7

    def sample_platform(self, users, rng: np.random.Generator) -> np.ndarray:
        p = self.world.users.platform_p[self._users(users)]
        r = rng.random(len(p))[:, None]
        return np.minimum((np.cumsum(p, 1) < r).sum(1), 2)

    def sample_hour(self, users, weekday: int, rng: np.random.Generator) -> np.ndarray:
        us = self.world.users
        u = self._users(users)
        n = len(u)
        habit = np.where(rng.random(n) < HABIT_P, us.hour1[u], us.hour2[u]).astype(np.int64)
        jitter = np.rint(rng.normal(0.0, 0.8, n)).astype(np.int64)
        weekend_late = (weekday >= 5) & (habit < 10)  # early birds sleep in on weekends
        return np.clip(habit + jitter + weekend_late, 5, 23)

    def sample_minutes(self, users, hour, weekday: int, rng: np.random.Generator) -> np.ndarray:
        u = self._users(users)
        m = self.world.users.minutes[u] * HOUR_MINUTES[np.asarray(hour) % 24]
        m = m * (WEEKEND_MINUTES if weekday >= 5 else 1.0) * rng.lognormal(0.0, 0.25, len(u))
        return np.clip(m, 5, 120).astype(np.float32)

    # ---- the oracle --------------------------------------------------------------------
    def oracle_scores(
        self,
        users,
        platform,
        day: int,
        classes,
        state=None,
        n_samples: int = 16,
        chain: bool = True,
        seed: int | None = None,
        hour: int | None = None,
    ) -> np.ndarray:
        """Expected number of times each user takes each candidate class on `platform` on
        `day` given a session that day, using only what a daily batch list knows: the user's
        state at the start of the day (`state`, a behaviour.UserState; None = no history) and
        the day. The hour, minutes available, the session's first platform and the in-session
        chain are marginalised by Monte Carlo over the planted habits (n_samples per user).
        `hour` fixes the hour a row assumes (e.g. a "start your morning" row) instead.
        Returns (users x classes), higher = more likely; rank each row to get the oracle list."""
        u = self._users(users)
        cand = self._classes(classes)
        p_target = int(platform_code(platform))
        entropy = [self.cfg.seed, 99, day, p_target] + ([seed] if seed is not None else [])
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
        n, s = len(u), n_samples
        rows = np.repeat(u, s)
        wd = self.weekday(day)
        p0 = self.sample_platform(rows, rng)
        hour = self.sample_hour(rows, wd, rng) if hour is None else np.full(len(rows), int(hour))
        t = day * DAY + hour * 3600 + rng.integers(0, 3600, len(rows))
        m = self.sample_minutes(rows, hour, wd, rng)
        base = Context(platform=p0, hour=hour, weekday=wd, minutes_available=m, day=day, time_sec=t)
        if state is not None:
            base = replace(base, **state.context_fields(rows, t))
        score = np.zeros((n * s, len(cand)), np.float32)
        offers = {p: self.offered(p, day) for p in range(3)}
        for p in range(3):
            r = np.flatnonzero(p0 == p)
            if not len(r):
                continue
            ctx = base.take(r)
            pr = softmax_rows(self.utility(rows[r], offers[p], ctx))
            if p == p_target:
                score[r] += _columns(pr, offers[p], cand)
            if not chain:
                continue
            # the first class: one draw per sample; then the chance of a second on the target
            first = offers[p][_draw(pr, rng)]
            cl = self.world.classes
            done = rng.random(len(r)) < self.completion_probability(rows[r], first, m[r])
            mins = np.where(done, cl.duration[first], 0.5 * cl.duration[first])
            left = m[r] - mins
            pc = self.chain_probability(rows[r], first, done, left)
            # the second class is on the target platform: stays there, or moves to the app
            p_on = 1 - SWITCH_TO_APP[p] if p == p_target else (SWITCH_TO_APP[p] if p_target == V.APP else 0.0)
            if p_on == 0:
                continue
            ctx2 = replace(
                ctx,
                platform=np.full(len(r), p_target),
                minutes_available=np.maximum(left, 5).astype(np.float32),
                time_sec=ctx.time_sec + (mins * 60).astype(np.int64) + 120,
                prev_discipline=cl.discipline[first].astype(np.int64),
                prev_body_focus=cl.body_focus[first].astype(np.int64),
                prev_duration=cl.duration[first].astype(np.float32),
                last_discipline=cl.discipline[first].astype(np.int64),
                last_body_focus=cl.body_focus[first].astype(np.int64),
                hours_since_last=np.zeros(len(r), np.float32),
                recent_classes=_push_recent(ctx.recent_classes, first)[:, :RECENT],
            )
            pr2 = softmax_rows(self.utility(rows[r], offers[p_target], ctx2))
            score[r] += (pc * p_on)[:, None].astype(np.float32) * _columns(pr2, offers[p_target], cand)
        return score.reshape(n, s, len(cand)).mean(axis=1)


def _difficulty_fit(difficulty: np.ndarray, fitness: np.ndarray) -> np.ndarray:
    over = np.maximum(difficulty - fitness - 0.5, 0)
    under = np.maximum(fitness - difficulty - 2.0, 0)
    return (-0.12 * over * over - 0.06 * under).astype(np.float32)


def _compact(keys: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True) for small non-negative keys, without sorting."""
    seen = np.zeros(space, bool)
    seen[keys] = True
    uniq = np.flatnonzero(seen)
    lookup = np.zeros(space, np.int64)
    lookup[uniq] = np.arange(len(uniq))
    return uniq, lookup[keys]


def _columns(prob: np.ndarray, offer: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Probabilities over `offer` -> over `cand` (0 for candidates not offered)."""
    pos = np.searchsorted(offer, cand)
    pos = np.minimum(pos, len(offer) - 1)
    ok = offer[pos] == cand
    return np.where(ok[None, :], prob[:, pos], 0.0)


def _draw(prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cum = np.cumsum(prob, axis=1)
    r = rng.random(len(prob))[:, None] * cum[:, -1:]
    return np.minimum((cum < r).sum(1), prob.shape[1] - 1)


def _push_recent(recent: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    new = np.asarray(new, np.int64)[:, None]
    return new if recent is None else np.concatenate([new, recent], axis=1)
