"""The realism report, computed from the landing files, keeps every DESIGN.md figure in range:
on the `small` preset (the demo's data, which every model is judged on) and on a modest custom
platform with both ways of choosing classes."""

import json

import polars as pl
import pytest

from simulator import SimConfig, generate
from simulator.cli import main
from simulator.report import format_report, read_entity, report

FIGURES = {
    "top_instructor_share": lambda v: 0.30 <= v <= 0.60,
    "bike_cycling_share": lambda v: v >= 0.70,
    "tread_run_walk_share": lambda v: v >= 0.70,
    "app_discipline_mix": lambda v: v >= 5,  # and APP_MIX below, by name
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


# DESIGN.md: "the app carries the broad mix (strength, yoga, meditation, stretching, cardio...)":
# each of these is at least this share of the app's workouts, and no discipline takes more than
# APP_TOP_MAX (the report's own bounds for a "broad" discipline and for the largest one)
APP_MIX = ("strength", "yoga", "meditation", "stretching", "cardio")
APP_SHARE_MIN, APP_TOP_MAX = 0.05, 0.45


def app_mix(landing: str) -> dict[str, float]:
    """discipline -> share of the app's workouts, from the landing files."""
    classes = read_entity(landing, "classes", ["class_id", "discipline"])
    w = read_entity(landing, "workouts", ["class_id", "platform"]).filter(pl.col("platform") == "app")
    shares = w.join(classes, on="class_id", how="left")["discipline"].value_counts(normalize=True)
    return dict(zip(shares["discipline"], shares["proportion"]))


def assert_realistic(landing: str) -> dict:
    r = report(landing)
    assert set(r["figures"]) == set(FIGURES)
    bad = {k: r["figures"][k]["value"] for k, ok in FIGURES.items() if not ok(r["figures"][k]["value"])}
    assert not bad, bad
    mix = app_mix(landing)
    thin = {d: round(mix.get(d, 0.0), 3) for d in APP_MIX if mix.get(d, 0.0) < APP_SHARE_MIN}
    assert not thin, f"the app's broad mix lacks {thin} (all: { {k: round(v, 3) for k, v in mix.items()} })"
    assert max(mix.values()) <= APP_TOP_MAX, mix
    assert all(x["pass"] for x in r["figures"].values()) and r["passed"]
    return r


@pytest.fixture(scope="module")
def small_landing(tmp_path_factory) -> str:
    """The `small` preset as `make demo` generates it (default seed, 60 days; ~20 s)."""
    path = str(tmp_path_factory.mktemp("landing_small"))
    generate(SimConfig.preset("small"), path, log=None)
    return path


@pytest.mark.slow
@pytest.mark.extra  # a 60-day `small` simulation (~30 s); `make demo` simulates it, the modest presets below stay
def test_small_preset_looks_like_a_real_platform(small_landing):
    r = assert_realistic(small_landing)
    assert r["counts"]["days"] == 60


@pytest.fixture(scope="module", params=["exact", "sampled"])
def modest_landing(request, tmp_path_factory, modest_cfg) -> str:
    """The exact softmax (tiny/small) and the sampled one (large) both look real."""
    path = str(tmp_path_factory.mktemp(f"landing_modest_{request.param}"))
    generate(modest_cfg.replace(choice=request.param), path, log=None)
    return path


def test_report_figures_in_design_ranges(modest_landing):
    r = assert_realistic(modest_landing)
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
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["counts"]["days"] == 3
    # what it prints and saves is the report of that landing zone, each figure's verdict included
    r = report(landing)
    lines = out.strip().splitlines()
    (counts,) = [ln for ln in lines if ln.startswith("counts: ")]
    assert json.loads(counts[len("counts: "):]) == json.loads(json.dumps(r["counts"]))
    assert [ln for ln in lines if ln != counts] == [  # (the counts' key order may differ)
        ln for ln in format_report(r).strip().splitlines() if not ln.startswith("counts: ")]
    as_json = lambda x: json.dumps(x, default=str, sort_keys=True)  # noqa: E731  (NaN == NaN)
    assert as_json(saved["figures"]) == as_json(r["figures"]) and saved["passed"] == r["passed"]
    printed = {line.split()[0]: line.split()[-1] for line in out.splitlines()
               if line.split() and line.split()[0] in r["figures"]}
    assert printed == {k: ("PASS" if x["pass"] else "FAIL") for k, x in r["figures"].items()}
    assert out.strip().splitlines()[-1] == "overall: " + ("PASS" if r["passed"] else "FAIL")
