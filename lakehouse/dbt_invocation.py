"""How the dbt project is invoked, without Dagster: its folder, the executable beside this Python,
the environment its profile and `run_range` macro read, and its vars' defaults.

`assets.dbt` runs dbt through dagster-dbt with these; the lakehouse benchmark runs the same
command in a process that never imports Dagster (a Dagster step has it loaded already).

dbt's unit tests check the SQL on fixed inputs: a build runs them when the project's code
changed since they last passed in a build of every model (`unit_test_args`), not again in every
daily partition (dbt advises running them in development and CI). An edit, a new dbt or a fresh
clone runs them again, before the models they test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from lakehouse.io.settings import PROJECT_ROOT, LakehouseSettings

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


def dbt_executable() -> str:
    """The dbt installed beside this Python (an un-activated venv has it off PATH)."""
    local = Path(sys.executable).parent / "dbt"
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")


def project_var(name: str, default: Any, project_dir: str | Path = DBT_PROJECT_DIR) -> Any:
    """A var's default from dbt_project.yml (the dbt project stays the source of truth)."""
    import yaml

    conf = yaml.safe_load((Path(project_dir) / "dbt_project.yml").read_text()) or {}
    return (conf.get("vars") or {}).get(name, default)


def dbt_target_for(settings: LakehouseSettings) -> str:
    return "s3" if settings.is_s3 else "local"


def run_env(start: dt.date, end: dt.date) -> dict[str, str]:
    """The inclusive range of partitions a dbt run computes (see macros/run_range.sql)."""
    return {"LAKEHOUSE_RUN_START_DATE": start.isoformat(), "LAKEHOUSE_RUN_END_DATE": end.isoformat()}


def dbt_env(settings: LakehouseSettings) -> dict[str, str]:
    """What the dbt profile reads (see dbt_project/profiles.yml)."""
    return {
        "LAKEHOUSE_URI": settings.uri,
        "LAKEHOUSE_DUCKDB_PATH": settings.duckdb_path,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def project_files(project_dir: str | Path = DBT_PROJECT_DIR) -> list[Path]:
    """The files of the dbt project's code (what a data engineer edits), in a stable order."""
    root = Path(project_dir)
    sources = [p for p in (root / "dbt_project.yml", root / "profiles.yml") if p.exists()]
    for folder in ("models", "macros", "tests", "seeds", "snapshots", "plugins"):
        if (root / folder).is_dir():
            sources += sorted(p for p in (root / folder).rglob("*") if p.is_file())
    return sources


def code_digest(project_dir: str | Path, dbt_vars: dict) -> str:
    """The project's code as dbt runs it: its files, the dataset's vars and dbt's version."""
    from importlib.metadata import version

    h = hashlib.sha256(json.dumps([dbt_vars, version("dbt-core"), version("dbt-duckdb")], sort_keys=True).encode())
    root = Path(project_dir)
    for p in project_files(root):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def unit_test_args(target_dir: str | Path, digest: str) -> list[str]:
    """`dbt build` arguments that leave the unit tests out when they passed on this code already
    (`unit_tests_passed` wrote `digest` in the target folder)."""
    marker = Path(target_dir) / "unit_tests_passed"
    passed = marker.exists() and marker.read_text() == digest
    return ["--exclude-resource-type", "unit_test"] if passed else []


def unit_tests_passed(target_dir: str | Path, digest: str) -> None:
    """After a build of every model with the unit tests: this code's need not run again."""
    marker = Path(target_dir) / "unit_tests_passed"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}")
    tmp.write_text(digest)
    os.replace(tmp, marker)  # whole, for the other processes of the code location


__all__ = ["DBT_PROJECT_DIR", "code_digest", "dbt_env", "dbt_executable", "dbt_target_for", "project_files",
           "project_var", "run_env", "unit_test_args", "unit_tests_passed"]
