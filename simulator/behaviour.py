"""Day-by-day simulation: who works out, when, where, which classes, and what they leave
behind (workouts, music likes, bookmarks, home-screen impressions).

Each day draws from its own random stream (seed, day) and reads only the per-user state at the
start of the day, so day k's events depend on (config, day k, state after day k-1) and never on
how the days were batched into runs. Everything is vectorized over the day's sessions; the
class choice is an exact softmax over every class offered (chunked), or, for the large size, an
importance-corrected softmax over sampled candidates (see `choose`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from . import vocab as V
from .truth import (
    RECENT,
    SWITCH_TO_APP,
    WEEKDAY_VISIT,
    Context,
    TruePreferences,
    PLATFORM,
)
from .world import DAY, World, stream

S_DAY = 10  # random stream kind for a day's behaviour
NEVER = -(10**12)
CHUNK_CELLS = 2_000_000  # rows x classes per utility block (~8 MB float32)
TREND_DAYS = 7
THIRD_CLASS_FACTOR = 0.35
HOME_POOL = 120  # the home screen draws from the top trending/new classes of the platform


@dataclass
class UserState:
    """What the platform remembers about each user at the start of a day (plus recent class
    counts for the home screen). Arrays are indexed by user / class code."""

    last_end: np.ndarray  # seconds since start of the last workout's end (NEVER: none)
    last_day: np.ndarray
    last_disc: np.ndarray  # -1 none
    last_bf: np.ndarray
    recent: np.ndarray  # (users, RECENT) latest class codes first, -1 none
    class_counts: np.ndarray  # (TREND_DAYS, classes) workouts per class, ring by day % 7

    @classmethod
    def empty(cls, n_users: int, n_classes: int) -> "UserState":
        return cls(
            last_end=np.full(n_users, NEVER, np.int64),
            last_day=np.full(n_users, -(10**6), np.int64),
            last_disc=np.full(n_users, -1, np.int8),
            last_bf=np.full(n_users, -1, np.int8),
            recent=np.full((n_users, RECENT), -1, np.int32),
            class_counts=np.zeros((TREND_DAYS, n_classes), np.int32),
        )

    def copy(self) -> "UserState":
        return UserState(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def context_fields(self, users: np.ndarray, t: np.ndarray) -> dict:
        """The start-of-session state as Context fields (see truth.Context)."""
        last = self.last_end[users]
        hours = np.where(last == NEVER, np.inf, (t - last) / 3600.0).astype(np.float32)
        return dict(
            last_discipline=self.last_disc[users].astype(np.int64),
            last_body_focus=self.last_bf[users].astype(np.int64),
            hours_since_last=hours,
            recent_classes=self.recent[users],
        )

    def record(self, world: World, users: np.ndarray, classes: np.ndarray, end: np.ndarray, day: int) -> None:
        """Remember one workout per user (users must be distinct within a call)."""
        cl = world.classes
        self.last_end[users] = end
        self.last_day[users] = day
        self.last_disc[users] = cl.discipline[classes]
        self.last_bf[users] = cl.body_focus[classes]
        self.recent[users, 1:] = self.recent[users, :-1]
        self.recent[users, 0] = classes

    def save(self, path) -> None:
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path, n_users: int, n_classes: int) -> "UserState":
        """Load, padded to the world's size (a longer horizon has more users/classes)."""
        with np.load(path) as z:
            s = cls.empty(n_users, n_classes)
            for f in fields(cls):
                a = z[f.name]
                tgt = getattr(s, f.name)
                if f.name == "class_counts":
                    tgt[:, : a.shape[1]] = a
                else:
                    tgt[: len(a)] = a
            return s

    @classmethod
    def from_workouts(cls, world: World, user_codes, class_codes, start_sec, minutes, day: int) -> "UserState":
        """Rebuild the state at the start of `day` from observed workouts (codes, start seconds
        since start_date and minutes done): what an analyst can compute from the landing files.
        Agrees with the simulated state; the trending counts cover the last 7 days."""
        u = np.asarray(user_codes, np.int64)
        c = np.asarray(class_codes, np.int64)
        t = np.asarray(start_sec, np.int64)
        keep = t < day * DAY
        u, c, t = u[keep], c[keep], t[keep]
        end = t + np.rint(np.asarray(minutes, np.float64)[keep] * 60).astype(np.int64)
        s = cls.empty(len(world.users), len(world.classes))
        order = np.lexsort((t, u))  # by user, then time: the last row per user is the latest
        u, c, t, end = u[order], c[order], t[order], end[order]
        last = np.r_[u[1:] != u[:-1], True]
        s.last_end[u[last]] = end[last]
        s.last_day[u[last]] = t[last] // DAY
        s.last_disc[u[last]] = world.classes.discipline[c[last]]
        s.last_bf[u[last]] = world.classes.body_focus[c[last]]
        # rank from the end within each user: 0 = latest
        first_of_user = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
        counts = np.diff(np.r_[first_of_user, len(u)])
        pos_from_end = np.repeat(first_of_user + counts, counts) - 1 - np.arange(len(u))
        k = pos_from_end < RECENT
        s.recent[u[k], pos_from_end[k]] = c[k]
        d = t // DAY
        for back in range(1, TREND_DAYS + 1):
            dd = day - back
            if dd >= 0:
                s.class_counts[dd % TREND_DAYS] = np.bincount(c[d == dd], minlength=len(world.classes))
        return s


@dataclass
class DayEvents:
    """One day's events as code arrays (export turns codes into ids)."""

    workouts: dict
    music_likes: dict
    bookmarks: dict
    impressions: dict
    sessions: int


def choose(truth: TruePreferences, users: np.ndarray, ctx: Context, rng: np.random.Generator) -> np.ndarray:
    """One class per row, drawn from softmax(utility) over the classes offered on the row's
    platform at its time. exact: every offered class, in row chunks. sampled: K candidates per
    row drawn from a popularity x platform proposal q, then softmax(U - log q) among them
    (self-normalised importance sampling: approaches the exact choice as K grows)."""
    n = len(users)
    out = np.empty(n, np.int64)
    uniform = rng.random(n)
    sampled = truth.cfg.choice == "sampled"
    k_cand = truth.cfg.candidate_samples
    for p in range(3):
        rows = np.flatnonzero(ctx.platform == p)
        if not len(rows):
            continue
        offer = truth.offered(p, ctx.day)
        if sampled:
            table, logq = _proposal(truth, p, ctx.day, offer)
        step = max(1, CHUNK_CELLS // (truth.cfg.candidate_samples if sampled else len(offer)))
        for lo in range(0, len(rows), step):
            r = rows[lo : lo + step]
            sub = ctx.take(r)
            if sampled:
                pos = table[rng.integers(0, len(table), (len(r), k_cand))]
                cand = offer.astype(np.int32)[pos]
                util = truth.utility(users[r], cand, sub) - logq[pos]
            else:
                util = truth.utility(users[r], offer, sub)
            # utilities are bounded (|U| < ~30), so exp needs no max-shift in float32
            np.exp(util, out=util)
            np.cumsum(util, axis=1, out=util)
            k = (util < (uniform[r] * util[:, -1])[:, None]).sum(axis=1)
            k = np.minimum(k, util.shape[1] - 1)
            out[r] = cand[np.arange(len(r)), k] if sampled else offer[k]
    return out


PROPOSAL_SLOTS = 1 << 20


def _proposal(truth: TruePreferences, p: int, day: int, offer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A lookup table for drawing candidates in O(1): class positions repeated in proportion
    to q = 0.8 softmax(popularity + platform fit) + 0.2 uniform (the uniform part keeps every
    class reachable), and log q as realised by the table (the importance weights)."""
    logq = truth.static(day)[offer] + PLATFORM[p, truth.world.classes.discipline[offer]]
    q = np.exp(logq - logq[np.isfinite(logq)].max())
    q = 0.8 * q / q.sum() + 0.2 / len(offer)
    slots = np.floor(q * PROPOSAL_SLOTS).astype(np.int64)
    short = PROPOSAL_SLOTS - slots.sum()  # hand the rounding remainder to the largest fractions
    slots[np.argsort(-(q * PROPOSAL_SLOTS - slots), kind="stable")[:short]] += 1
    table = np.repeat(np.arange(len(offer)), slots)
    return table, np.log(slots / PROPOSAL_SLOTS)


def _output_kj(world: World, users, classes, platform, minutes, rng) -> np.ndarray:
    """Work output on connected hardware (the class's equipment on its own platform)."""
    cl, us = world.classes, world.users
    fit = us.fitness[users].astype(np.float64)
    diff = cl.difficulty[classes]
    disc = cl.discipline[classes]
    watts = np.select(
        [disc == V.D["cycling"], disc == V.D["running"]],
        [60 + 14 * fit + 6 * diff, 90 + 12 * fit + 4 * diff],
        45 + 5 * fit + 2 * diff,
    ) * rng.lognormal(0.0, 0.12, len(users))
    kj = np.clip(np.round(watts * minutes * 60 / 1000, 1), 0, 5000)
    connected = (platform != V.APP) & (cl.equipment[classes] == platform)
    return np.where(connected, kj, np.nan)


def simulate_day(truth: TruePreferences, state: UserState, day: int) -> DayEvents:
    """Simulate `day` from `state` (updated in place to the state after the day)."""
    cfg, world = truth.cfg, truth.world
    us, cl = world.users, world.classes
    rng = stream(cfg.seed, S_DAY, day)
    wd = truth.weekday(day)
    nu = world.n_users_by(day)

    # who works out today: weekly rate, weekday, new-user enthusiasm, rest after yesterday, churn
    p = us.rate[:nu] / 7.0 * WEEKDAY_VISIT[wd]
    p = p * np.where(day - us.signup_day[:nu] < 14, 1.3, 1.0)
    p = p * np.where(state.last_day[:nu] == day - 1, 0.7, 1.1)
    p = p * (day < us.churn_day[:nu])
    v = np.flatnonzero(rng.random(nu) < p)
    plat = truth.sample_platform(v, rng)
    hour = truth.sample_hour(v, wd, rng)
    t = day * DAY + hour * 3600 + rng.integers(0, 3600, len(v))
    m = truth.sample_minutes(v, hour, wd, rng)
    ok = t >= us.signup_sec[v] + 600  # a new user's first session comes after signing up
    v, plat, hour, t, m = v[ok], plat[ok], hour[ok], t[ok], m[ok]
    n = len(v)

    trend = state.class_counts.sum(axis=0)  # before today's classes are counted

    # the session: a first class, then maybe a second and a third
    rows = {k: [] for k in ("user", "cls", "platform", "start", "completed", "minutes")}
    ctx = Context(platform=plat, hour=hour, weekday=wd, minutes_available=m, day=day, time_sec=t,
                  **state.context_fields(v, t))
    cur_u, cur_p, cur_t, left = v, plat, t, m
    for depth in range(3):
        c = choose(truth, cur_u, ctx, rng)
        done = rng.random(len(cur_u)) < truth.completion_probability(cur_u, c, ctx.minutes_available)
        dur = cl.duration[c].astype(np.float64)
        mins = np.where(done, dur, np.round(dur * rng.uniform(0.15, 0.9, len(cur_u)), 1))
        end = cur_t + np.rint(mins * 60).astype(np.int64)
        for k, a in zip(rows, (cur_u, c, cur_p, cur_t, done, mins)):
            rows[k].append(a)
        state.record(world, cur_u, c, end, day)
        if depth == 2:
            break
        left = np.asarray(left, np.float64) - mins
        pc = truth.chain_probability(cur_u, c, done, left) * (1.0 if depth == 0 else THIRD_CLASS_FACTOR)
        nxt_t = end + rng.integers(30, 240, len(cur_u))
        go = (rng.random(len(cur_u)) < pc) & (nxt_t < (day + 1) * DAY - 1800)
        switch = rng.random(len(cur_u)) < SWITCH_TO_APP[cur_p]
        nxt_p = np.where(switch, V.APP, cur_p)
        g = np.flatnonzero(go)
        cur_u, cur_p, cur_t, left = cur_u[g], nxt_p[g], nxt_t[g], left[g]
        prev = c[g]
        ctx = Context(
            platform=cur_p,
            hour=(cur_t % DAY) // 3600,
            weekday=wd,
            minutes_available=np.maximum(left, 5).astype(np.float32),
            day=day,
            time_sec=cur_t,
            prev_discipline=cl.discipline[prev].astype(np.int64),
            prev_body_focus=cl.body_focus[prev].astype(np.int64),
            prev_duration=cl.duration[prev].astype(np.float32),
            **state.context_fields(cur_u, cur_t),
        )
        if not len(g):
            break

    imp = _impressions(truth, v, plat, t, rows["cls"][0], trend, rng, day)
    w = {k: np.concatenate(a) for k, a in rows.items()}
    order = np.lexsort((w["user"], w["start"]))
    w = {k: a[order] for k, a in w.items()}
    w["output_kj"] = _output_kj(world, w["user"], w["cls"], w["platform"], w["minutes"], rng)

    # music likes: taste for the class's genre, more after finishing it
    like = rng.random(len(w["user"])) < truth.like_probability(w["user"], w["cls"], w["completed"])
    liked_ts = w["start"] + np.rint(w["minutes"] * 60 * rng.uniform(0.5, 1.0, len(like))).astype(np.int64)
    likes = dict(user=w["user"][like], cls=w["cls"][like], ts=np.minimum(liked_ts[like], (day + 1) * DAY - 1))

    # bookmarks: saving something seen on the home screen for later (favourite instructors more)
    fav = (us.fav_instr[imp["user"]] == cl.instructor[imp["cls"]][:, None]).any(1)
    bm = rng.random(len(imp["user"])) < np.where(fav, 0.04, 0.012)
    bm_ts = np.minimum(imp["ts"][bm] + rng.integers(2, 60, int(bm.sum())), (day + 1) * DAY - 1)
    bookmarks = dict(user=imp["user"][bm], cls=imp["cls"][bm], ts=bm_ts)

    state.class_counts[day % TREND_DAYS] = np.bincount(w["cls"], minlength=len(cl))
    return DayEvents(workouts=w, music_likes=likes, bookmarks=bookmarks, impressions=imp, sessions=n)


def _impressions(truth, v, plat, t, taken, trend, rng, day) -> dict:
    """The home screen shown when a session starts from it: the platform's own (heuristic)
    recommender mixes trending classes and new releases, with noise; positions 1..N. About a
    third of the time it also showed the class the user then took (often near the top)."""
    cfg, cl = truth.cfg, truth.world.classes
    n_show = cfg.impressions_per_visit
    shown = rng.random(len(v)) < cfg.impression_visit_share
    ts = np.maximum(t - rng.integers(5, 120, len(v)), day * DAY)
    insert = rng.random(len(v)) < 0.35
    insert_pos = np.minimum(rng.geometric(0.45, len(v)) - 1, n_show - 1)
    out = {k: [] for k in ("user", "platform", "ts", "cls", "position")}
    for p in range(3):
        offer = truth.offered(p, day)
        if len(offer) < n_show:
            continue
        age = day - cl.release_day[offer]
        score = np.log1p(trend[offer]) + 1.5 * (age <= 3) + 0.3 * (age <= 14)
        best = np.argsort(-score, kind="stable")[:HOME_POOL]
        pool, pool_score = offer[best], score[best]
        rows = np.flatnonzero(shown & (plat == p))
        for lo in range(0, len(rows), 50_000):  # chunks bound the noise matrix at scale
            r = rows[lo : lo + 50_000]
            s = pool_score[None, :] + rng.gumbel(size=(len(r), len(pool)))
            s = np.where(cl.release_sec[pool][None, :] > t[r, None], -np.inf, s)
            top = np.argpartition(-s, n_show - 1, axis=1)[:, :n_show]
            top = pool[np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1), 1)]
            tk = taken[r]
            put = insert[r] & ~(top == tk[:, None]).any(1) & (cl.release_sec[tk] <= ts[r])
            top[np.flatnonzero(put), insert_pos[r][put]] = tk[put]
            out["cls"].append(top.ravel())
            out["position"].append(np.tile(np.arange(1, n_show + 1), len(r)))
            out["user"].append(np.repeat(v[r], n_show))
            out["platform"].append(np.full(len(r) * n_show, p))
            out["ts"].append(np.repeat(ts[r], n_show))
    if not out["user"]:
        return {k: np.zeros(0, np.int64) for k in out}
    return {k: np.concatenate(a) for k, a in out.items()}
