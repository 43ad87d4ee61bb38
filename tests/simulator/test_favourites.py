"""A simulated user's planted favourites, rebuilt from the config alone."""

from __future__ import annotations

from simulator import vocab as V
from simulator.config import SimConfig
from simulator.favourites import true_favourites
from simulator.world import World


def test_favourites_are_the_worlds_and_unknown_ids_get_none():
    cfg = {"n_users_initial": 50, "n_classes_initial": 40, "n_instructors": 8, "days": 2, "seed": 3}
    world = World(SimConfig.from_dict(cfg))
    ids = [str(u) for u in world.user_ids(range(len(world.users)))]
    got = true_favourites(cfg, [*ids, "u9999999", "listener_1"])
    assert got["u9999999"] is None and got["listener_1"] is None
    for code, uid in enumerate(ids):
        fav = world.users.fav_instr[code]
        assert got[uid]["instructors"] == [world.instructors.name[i] for i in fav if i >= 0]
        assert 1 <= len(got[uid]["instructors"]) <= 3 and len(set(got[uid]["instructors"])) == len(got[uid]["instructors"])
        best = V.DISCIPLINES[int(world.users.affinity[code].argmax())]
        assert got[uid]["disciplines"][0] == best and len(got[uid]["disciplines"]) == 3
