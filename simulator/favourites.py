"""A simulated user's true taste, as a reviewer reads it: favourite instructors (by name, in the
order of their weight) and the disciplines with the highest planted affinity.

Rebuilt from `<landing>/_simulator/config.json` alone (the World is a pure function of the
config, `truth.py`), so nothing more needs persisting. Users the config's world does not hold
(another dataset, a later day) get None."""

from __future__ import annotations

import numpy as np

from . import vocab as V
from .config import SimConfig
from .world import World


def true_favourites(config: dict, user_ids: list[str], n_disciplines: int = 3) -> dict[str, dict | None]:
    cfg = SimConfig.from_dict(config)
    world = World(cfg)
    users, names = world.users, world.instructors.name
    out: dict[str, dict | None] = {}
    for uid in user_ids:
        try:
            code = int(world.user_codes([uid])[0])
        except ValueError:
            code = -1
        if not 0 <= code < len(users):
            out[uid] = None
            continue
        fav = [int(i) for i in users.fav_instr[code] if i >= 0]
        top = np.argsort(-users.affinity[code])[:n_disciplines]
        out[uid] = {"instructors": [names[i] for i in fav],
                    "disciplines": [V.DISCIPLINES[int(d)] for d in top]}
    return out
