"""Fault injection: each test injects one real fault, asserts nothing committed was lost or
duplicated and that the next run succeeds, and records what it saw through `fault_drill`.

`make fault-drill` (benchmarks/fault_drill.py) runs this folder FAULT_REPEAT times and turns the
records (JSON lines in FAULT_DRILL_OUT) into the table of faults, survivals, rows lost and time
to recover. Plain `make test` runs each fault once and records nothing, except the drills marked
`drill_only` (whole runs repeated for one more variant of a fault already covered): the
drill runs those too, and so does `make test` with FAULT_DRILL_ALL=1. Keeps the suite's time down.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import pytest


@dataclass
class FaultRecord:
    fault: str = ""
    test: str = ""
    round: int = 0
    rows_expected: int | None = None  # committed rows that must survive the fault
    rows_lost: int | None = None  # committed rows missing after the fault (must be 0)
    rows_duplicated: int | None = None  # rows present more than once afterwards (must be 0)
    recover_s: float | None = None  # from the fault to the next successful run's end
    survived: bool = False  # the test passed: nothing lost, next run succeeded
    detail: dict = field(default_factory=dict)
    _t0: float | None = None

    def injected(self) -> None:
        """Call when the fault has happened: recovery time is measured from here."""
        self._t0 = time.perf_counter()

    def recovered(self) -> None:
        """Call when the next run after the fault has succeeded."""
        if self._t0 is None:
            raise AssertionError("recovered() before injected()")
        self.recover_s = round(time.perf_counter() - self._t0, 3)

    def rows(self, *, expected: int, present: int, distinct: int) -> None:
        """Record the committed rows: `present` counted, `distinct` by primary key."""
        self.rows_expected = expected
        self.rows_lost = max(expected - distinct, 0)
        self.rows_duplicated = present - distinct


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FAULT_DRILL_ALL") == "1" or os.environ.get("FAULT_DRILL_OUT"):
        return
    skip = pytest.mark.skip(reason="drill only: run by `make fault-drill` (or FAULT_DRILL_ALL=1)")
    for item in items:
        if item.get_closest_marker("drill_only"):
            item.add_marker(skip)


def pytest_generate_tests(metafunc):
    if "fault_round" in metafunc.fixturenames:
        n = max(1, int(os.environ.get("FAULT_REPEAT", "1")))
        metafunc.parametrize("fault_round", range(n), ids=[f"round{i}" for i in range(n)])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item._fault_passed = report.passed


@pytest.fixture
def fault_drill(request, fault_round):
    """The record of this test's fault; written out after the test when FAULT_DRILL_OUT is set."""
    marker = request.node.get_closest_marker("fault")
    rec = FaultRecord(fault=marker.args[0] if marker else request.node.name,
                      test=request.node.nodeid, round=fault_round)
    yield rec
    rec.survived = bool(getattr(request.node, "_fault_passed", False))
    out = os.environ.get("FAULT_DRILL_OUT")
    if out:
        row = {k: v for k, v in asdict(rec).items() if not k.startswith("_")}
        with open(out, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
