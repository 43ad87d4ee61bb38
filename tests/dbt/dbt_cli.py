"""The dbt project and the dbt executable of this venv, for the tests that run dbt themselves."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT_DIR = REPO / "dbt_project"


def dbt_executable() -> str:
    """The venv's dbt (beside this Python), else the one on PATH; skips the test without one."""
    here = Path(sys.executable).parent / "dbt"
    found = str(here) if here.exists() else shutil.which("dbt")
    if not found:
        pytest.skip("dbt executable not found")
    return found
