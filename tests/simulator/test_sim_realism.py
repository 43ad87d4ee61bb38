"""The realism report, computed from the landing files, keeps every DESIGN.md figure in range."""

import json

import pytest

from simulator import generate
from simulator.cli import main
from simulator.report import report

FIGURES = {
    "top_instructor_share": lambda v: 0.30 <= v <= 0.60,
    "bike_cycling_share": lambda v: v >= 0.70,
    "tread_run_walk_share": lambda v: v >= 0.70,
    "app_discipline_mix": lambda v: v >= 5,
    "peak_yoga": lambda v: v == "morning",
    "peak_stretching": lambda v: v == "morning",
    "peak_meditation": lambda v: v == "night",
    "peak_cycling": lambda v: v == "evening",
    "weekend_duration_ratio": lambda v: v >= 1.10,
    "multi_class_session_share": lambda v: 0.25 <= v <= 0.33,
    "second_class_short_cooldown": lambda v: v >= 0.40,
    "top10pct_classes_share": lambda v: v >= 0.50,
    "new_class_early_share": lambda v: v >= 0.60,
    "active_user_workouts_per_week": lambda v: 2 <= v <= 5,
    "new_classes_per_day": lambda v: v >= 20,
    "new_users_per_day": lambda v: v > 0,
}


@pytest.fixture(scope="module", params=["exact", "sampled"])
def modest_landing(request, tmp_path_factory, modest_cfg) -> str:
    """The exact softmax (tiny/small) and the sampled one (large) both look real."""
    path = str(tmp_path_factory.mktemp(f"landing_modest_{request.param}"))
    generate(modest_cfg.replace(choice=request.param), path, log=None)
    return path


def test_report_figures_in_design_ranges(modest_landing):
    r = report(modest_landing)
    assert set(r["figures"]) == set(FIGURES)
    bad = {k: r["figures"][k]["value"] for k, ok in FIGURES.items() if not ok(r["figures"][k]["value"])}
    assert not bad, bad
    assert all(x["pass"] for x in r["figures"].values()) and r["passed"]
    assert 25_000 < r["counts"]["workouts"] < 60_000


def test_report_flags_a_platform_that_is_not_realistic(tmp_path, tiny_cfg):
    # a catalogue that never grows: the report must say FAIL
    flat = str(tmp_path / "flat")
    generate(tiny_cfg.replace(new_classes_per_day=0), flat, n_days=7, log=None)
    r = report(flat)
    assert not r["figures"]["new_classes_per_day"]["pass"] and not r["passed"]


def test_cli_generate_and_report(tmp_path, capsys):
    landing = str(tmp_path / "cli")
    assert main(["generate", "--size", "tiny", "--seed", "5", "--days", "3", "--landing", landing]) == 0
    out = capsys.readouterr().out
    assert out.count("workouts") >= 3 and "done: 3 days" in out
    assert main(["report", "--landing", landing, "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "top_instructor_share" in out and ("PASS" in out or "FAIL" in out)
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["days"] == 3
