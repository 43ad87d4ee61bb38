"""How the dbt project is invoked, without Dagster: its folder, the executable beside this Python,
the environment its profile and `run_range` macro read, and its vars' defaults.

`assets.dbt` runs dbt through dagster-dbt with these; the lakehouse benchmark runs the same
command in a process that never imports Dagster (a Dagster step has it loaded already).
"""

from __future__ import annotations

import datetime as dt
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


__all__ = ["DBT_PROJECT_DIR", "dbt_env", "dbt_executable", "dbt_target_for", "project_var", "run_env"]
