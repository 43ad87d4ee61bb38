"""ml.allocator: polars' jemalloc keeps freed pages for 30 s in the processes that train."""

from __future__ import annotations

import os
import subprocess
import sys

from ml.allocator import DECAY_MS, OPTIONS, VAR, allocator_env

POLARS = "dirty_decay_ms:500,muzzy_decay_ms:1000"  # what polars writes when it is imported


def test_unset_gets_the_options():
    assert allocator_env({}) == {VAR: f"dirty_decay_ms:{DECAY_MS},muzzy_decay_ms:{DECAY_MS}"}


def test_after_polars_default_the_options_come_last():
    # jemalloc takes the last of a repeated option: ours after polars' own
    assert allocator_env({VAR: POLARS}) == {VAR: f"{POLARS},{OPTIONS}"}
    # a process started by one that imported polars (its value again, prefixed by polars)
    assert allocator_env({VAR: f"{POLARS},{POLARS}"})[VAR].endswith(f",{OPTIONS}")


def test_a_decay_the_user_set_is_kept():
    mine = f"{POLARS},dirty_decay_ms:0"
    assert allocator_env({VAR: mine}) == {VAR: mine}
    assert allocator_env({VAR: "muzzy_decay_ms:-1"}) == {VAR: "muzzy_decay_ms:-1"}
    # other options of the user's: kept, the decay added after them
    assert allocator_env({VAR: "narenas:2"}) == {VAR: f"narenas:2,{OPTIONS}"}


def test_applying_twice_changes_nothing():
    once = allocator_env({})
    assert allocator_env(once) == once
    assert allocator_env({VAR: f"{POLARS},{once[VAR]}"}) == {VAR: f"{POLARS},{once[VAR]}"}


def test_an_entry_point_sets_it_for_itself_and_its_children():
    """`keep_freed_pages` before polars' import: this process's jemalloc and a child's see the
    decay last (polars prefixes its own default at import)."""
    code = ("import os, subprocess, sys\n"
            "from ml.allocator import VAR, keep_freed_pages\n"
            "print(keep_freed_pages())\n"
            "import polars\n"
            "print(os.environ[VAR])\n"
            "sys.stdout.flush()\n"
            "subprocess.run([sys.executable, '-c', 'import os, polars; print(os.environ[\"%s\"])'])\n" % VAR)
    env = {k: v for k, v in os.environ.items() if k != VAR}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    applied, own, child = out.stdout.split()
    assert applied == "True"
    assert own == f"{POLARS},{OPTIONS}"
    assert child.endswith(f",{OPTIONS}") and child.startswith(POLARS)


def test_the_bench_runs_each_setting_in_its_own_environment(monkeypatch):
    """benchmarks.allocator_bench: the default child has no `_RJEM_MALLOC_CONF` of ours (not even
    inherited), the other one the options; the table pairs the waits run by run."""
    import json
    from types import SimpleNamespace

    from benchmarks import allocator_bench as bench

    seen = {}

    def fake_run(cmd, env, capture_output, text):
        setting = "ml.allocator" if VAR in env else "polars default"
        seen[setting] = env.get(VAR)
        wait = 1.5 if VAR in env else 2.0
        row = {"allocator": env.get(VAR, ""), "samples": 10, "step_share": 0.8,
               "wait_us_per_row": wait, "step_us_per_row": 6.0}
        return SimpleNamespace(returncode=0, stdout=json.dumps(row) + "\n", stderr="")

    monkeypatch.setenv(VAR, f"{POLARS},{OPTIONS}")  # a parent that has it: not passed to the default
    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    args = SimpleNamespace(lakehouse="lake", days=7, batch_size=2048)
    runs = {s: [bench._run_child(s, "fused", args)] for s in bench.SETTINGS}
    assert seen == {"polars default": None, "ml.allocator": OPTIONS}
    table = bench._table({"paths": {"fused": runs}})
    assert "| fused | ml.allocator | 0.80 [0.80-0.80] | 1.50 [1.50-1.50] | 6.00 [6.00-6.00] | 0.75 [0.75-0.75] |" in table
