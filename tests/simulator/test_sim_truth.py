"""The truth is reconstructible from the config alone, and its structure is measurable: the
oracle ranks the classes users actually took far better than popularity or context-free taste."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simulator import Context, TruePreferences, state_at
from simulator.behaviour import UserState, simulate_day


def ap_at_k(scores, cand, relevant, k=10) -> float:
    top = cand[np.argsort(-scores, kind="stable")[:k]]
    hits = np.isin(top, list(relevant))
    if not hits.any():
        return 0.0
    prec = np.cumsum(hits) / np.arange(1, len(top) + 1)
    return float((prec * hits).sum() / min(len(relevant), k))


def test_truth_reconstructible_from_config(tiny_cfg):
    a = TruePreferences.from_config(tiny_cfg)
    b = TruePreferences.from_config(tiny_cfg.replace(days=tiny_cfg.days + 5))  # longer horizon
    rng = np.random.default_rng(0)
    users = rng.integers(0, a.world.n_users_by(5), 40)
    classes = a.offered(2, 5)
    ctx = Context(platform="app", hour=rng.integers(5, 23, 40), weekday=3, minutes_available=30, day=5,
                  prev_discipline=rng.integers(-1, 9, 40), prev_body_focus=rng.integers(0, 5, 40))
    ua, ub = a.utility(users, classes, ctx), b.utility(users, classes, ctx)
    assert np.array_equal(ua, ub) and np.isfinite(ua).all()
    ids = a.world.user_ids(users)
    assert np.array_equal(a.utility(ids, a.world.class_ids(classes), ctx), ua)
    other = TruePreferences.from_config(tiny_cfg.replace(seed=tiny_cfg.seed + 1))
    assert not np.array_equal(other.utility(users, classes, ctx), ua)


def test_planted_context_effects_point_the_right_way(tiny_cfg):
    t = TruePreferences.from_config(tiny_cfg)
    users = np.arange(t.world.n_users_by(0))
    classes = t.offered(2, 0)
    disc = t.world.classes.discipline[classes]

    def share(d, **kw):
        ctx = Context(weekday=2, day=0, **{"platform": "app", "minutes_available": 30, **kw})
        return t.choice_probabilities(users, classes, ctx)[:, disc == d].sum(1).mean()

    assert share(6, hour=22) > 2 * share(6, hour=8)  # meditation at night
    assert share(4, hour=7) > 1.5 * share(4, hour=19)  # yoga in the morning
    # after a ride, a short stretch; a long weekend slot takes longer classes
    assert share(5, hour=18, prev_discipline=0, minutes_available=10) > 2 * share(5, hour=18)
    p = t.choice_probabilities(users, classes, Context("app", 10, 5, 60, 0))
    q = t.choice_probabilities(users, classes, Context("app", 10, 1, 20, 0))
    dur = t.world.classes.duration[classes]
    assert (p * dur).sum(1).mean() > 1.3 * (q * dur).sum(1).mean()


def test_oracle_beats_popularity_and_context_free(modest_cfg):
    cfg = modest_cfg.replace(days=21, n_users_initial=1500)
    truth = TruePreferences.from_config(cfg)
    state = UserState.empty(len(truth.world.users), len(truth.world.classes))
    ap = {"oracle": [], "popularity": [], "context_free": []}
    for d in range(cfg.days):
        start = state.copy()
        ev = simulate_day(truth, state, d)
        if d < cfg.days - 3:
            continue
        w = ev.workouts
        pop = start.class_counts.sum(0) + 1e-6 * np.arange(len(truth.world.classes))[::-1]
        for p in range(3):
            sel = w["platform"] == p
            users = np.unique(w["user"][sel])
            cand = truth.offered(p, d)
            oracle = truth.oracle_scores(users, p, d, cand, state=start)
            # the same user taste with the context averaged out: any platform, any hour
            free = sum(
                truth.choice_probabilities(users, cand, Context(pp, hr, truth.weekday(d), 30, d))
                for pp in range(3) for hr in (7, 12, 18, 22)
            )
            for i, u in enumerate(users):
                rel = set(w["cls"][sel & (w["user"] == u)])
                ap["oracle"].append(ap_at_k(oracle[i], cand, rel))
                ap["popularity"].append(ap_at_k(pop[cand], cand, rel))
                ap["context_free"].append(ap_at_k(free[i], cand, rel))
    m = {k: float(np.mean(v)) for k, v in ap.items()}
    assert len(ap["oracle"]) > 500
    assert m["oracle"] > 2.0 * m["popularity"], m
    assert m["oracle"] > 1.25 * m["context_free"], m


def test_state_from_landing_equals_simulated_state(tiny_cfg, tiny_landing):
    day = 9
    truth, sim = state_at(tiny_cfg, day)
    files = sorted(Path(tiny_landing).glob("workouts/date=*/*.parquet"))
    w = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
    start = np.datetime64(str(tiny_cfg.start_date), "s")
    sec = (w["start_ts"].dt.tz_localize(None).values.astype("datetime64[s]") - start).astype(np.int64)
    obs = UserState.from_workouts(truth.world, truth.world.user_codes(w["user_id"]), truth.world.class_codes(w["class_id"]),
                                  sec, w["minutes"].to_numpy(), day)
    for f in ("last_end", "last_day", "last_disc", "last_bf", "recent", "class_counts"):
        assert np.array_equal(getattr(obs, f), getattr(sim, f)), f
    # and the oracle built on either state agrees
    users = np.unique(truth.world.user_codes(w["user_id"]))[:20]
    cand = truth.offered(0, day)
    assert np.allclose(truth.oracle_scores(users, "bike", day, cand, state=obs),
                       truth.oracle_scores(users, "bike", day, cand, state=sim))
