"""Running the platform: simulate days and write them to the landing zone.

Days [start_day, start_day + n_days) are written. The state at start_day comes from a
checkpoint in `state_dir` when one was saved for this config, else from re-simulating the
earlier days without writing them, so day k's files are the same whether it is generated in
one run with days 0..k-1 or on its own later ("one new day on top of 60")."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta

from .behaviour import UserState, simulate_day
from .config import SimConfig
from .export import day_tables, resolve, write_config, write_day
from .truth import TruePreferences


def _checkpoint(state_dir: str, cfg: SimConfig, day: int) -> str:
    return os.path.join(state_dir, f"state-{cfg.fingerprint()}-day{day:05d}.npz")


def state_at(cfg: SimConfig, day: int, truth: TruePreferences | None = None, state_dir: str | None = None,
             log: Callable[[str], None] | None = None) -> tuple[TruePreferences, UserState]:
    """The truth and the users' state at the start of `day` (after days 0..day-1)."""
    truth = truth or TruePreferences.from_config(cfg, n_days=max(cfg.days, day + 1))
    world = truth.world
    first = 0
    state = UserState.empty(len(world.users), len(world.classes))
    if state_dir and day > 0:
        for d in range(day - 1, -1, -1):  # the latest checkpoint at or before day - 1
            path = _checkpoint(state_dir, cfg, d)
            if os.path.exists(path):
                state = UserState.load(path, len(world.users), len(world.classes))
                first = d + 1
                break
    for d in range(first, day):
        t0 = time.perf_counter()
        simulate_day(truth, state, d)
        if log:
            log(f"  replay day {d:3d}  {time.perf_counter() - t0:5.2f}s")
    return truth, state


def generate(
    cfg: SimConfig,
    landing: str,
    start_day: int = 0,
    n_days: int | None = None,
    state_dir: str | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Simulate and write days [start_day, start_day + n_days) (default: up to cfg.days).
    Returns a summary: rows per entity, days, seconds."""
    t_start = time.perf_counter()
    n_days = cfg.days - start_day if n_days is None else n_days
    end = start_day + n_days
    cfg = cfg.replace(days=max(cfg.days, end))
    truth, state = state_at(cfg, start_day, state_dir=state_dir, log=log)
    fs, root = resolve(landing)
    write_config(cfg, fs, root)
    totals: dict[str, int] = {}
    for d in range(start_day, end):
        t0 = time.perf_counter()
        ev = simulate_day(truth, state, d)
        day_date = cfg.start_date + timedelta(days=d)
        counts = write_day(landing, day_date, day_tables(truth.world, ev, d), fs=fs, root=root)
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        if log:
            log(
                f"{day_date}  day {d:3d}  sessions {ev.sessions:7d}  workouts {counts['workouts']:8d}  "
                f"impressions {counts['impressions']:8d}  likes {counts['music_likes']:7d}  "
                f"new users {counts['users']:6d}  new classes {counts['classes']:5d}  "
                f"{time.perf_counter() - t0:5.2f}s  (total {time.perf_counter() - t_start:6.1f}s)"
            )
    if state_dir:
        os.makedirs(state_dir, exist_ok=True)
        state.save(_checkpoint(state_dir, cfg, end - 1))
    summary = {
        "landing": landing,
        "seed": cfg.seed,
        "start_date": str(cfg.start_date + timedelta(days=start_day)),
        "days": n_days,
        "rows": totals,
        "users_total": truth.world.n_users_by(end - 1),
        "classes_total": truth.world.n_classes_by(end - 1),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if log:
        log(f"done: {n_days} days in {summary['seconds']}s; rows {totals}")
    return summary
