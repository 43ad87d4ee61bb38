"""`make demo AUTOMATIONS=on` leaves every schedule and sensor running, with the landing sensor
past the days the demo ingested."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.io.settings import LakehouseSettings
from tests.landing_factory import DAY0, workout, write_day

pytestmark = [pytest.mark.slow, pytest.mark.extra]  # loads the code location four times (~1 min)
ROOT = Path(__file__).resolve().parents[2]


def test_automations_on_leaves_schedules_and_sensors_running(tmp_path, monkeypatch):
    from orchestration.demo import start_automations

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    for k in ("LAKEHOUSE_URI", "LANDING_URI", "LAKEHOUSE_DUCKDB_PATH", "LAKEHOUSE_MAPPING"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path / "data"))
    settings = LakehouseSettings.from_env()
    write_day(Path(settings.landing_uri), DAY0, with_catalogue=True, workouts=[workout("w1", "u1", "c1", DAY0)])

    assert start_automations(settings) == 0
    with dg.DagsterInstance.get() as instance:
        states = {s.instigator_name: s for s in instance.all_instigator_state()}
    # (correction_sensor runs by default: it has no stored state until someone stops it)
    expected = {"daily_recommendations_schedule", "cache_freshness_schedule", "landing_zone_sensor",
                "new_champion_sensor", "automation_sensor", "run_failure_remediation_sensor"}
    assert expected <= set(states), sorted(states)
    assert {n: states[n].status.value for n in expected} == {n: "RUNNING" for n in expected}
    # the landed day counts as seen: the daemon does not run it again
    cursor = json.loads(states["landing_zone_sensor"].instigator_data.cursor)
    assert list(cursor["seen"]) == [DAY0.isoformat()]
