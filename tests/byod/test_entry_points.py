"""Every bring-your-own-data entry point docs/byod.md shows works on a fresh clone, with exactly
the environment `make byod` sets (BYOD_ENV in the Makefile: LAKEHOUSE_URI, LANDING_URI and
LAKEHOUSE_DUCKDB_PATH set but empty) and a dbt project that was never parsed (no target/):

- the Dagster definitions (what `make byod` and `make byod-ui` load; they parse dbt first),
- `python -m lakehouse.mapped.importer MAPPING` (the check-only CLI),
- `orchestration.demo.source_range` (how `make byod` finds the days to run),

for the generated listening log (examples/listening/mapping.yaml) and for MovieLens
(examples/movielens/mapping.yaml), read from a tiny file in RecBole's format: `make movielens`
reads the real one from the recbole wheel."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ml.datasets import MAPPED, dataset_for
from simulator.external import ExternalConfig, generate_external

ROOT = Path(__file__).resolve().parents[2]


def write_movielens(folder: Path) -> None:
    """ml-100k.inter/.user/.item as RecBole ships them: tab-separated, typed headers."""
    folder.mkdir(parents=True)
    day = 86_400
    first = 874_724_710  # 1997-09-20, MovieLens-100K's first rating
    ratings = [(196 + u, 242 + (u * 7 + k) % 20, 1 + (u + k) % 5, first + (u + k) * day // 3)
               for u in range(12) for k in range(6)]
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join(f"{196 + u}\t{20 + u}\t{'MF'[u % 2]}\twriter\t55{u:03d}\n" for u in range(12)))
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{242 + i}\tA \"Movie\", Part {i}\t199{i % 8}\tDrama Comedy\n" for i in range(20)))


@pytest.fixture
def dbt_project_copy(tmp_path) -> Path:
    """The dbt project as a fresh clone has it: no target/ (never parsed), no logs/."""
    project = tmp_path / "dbt_project"
    shutil.copytree(ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    assert not (project / "target").exists()
    return project


def byod_env(mapping: Path, data_dir: Path) -> dict[str, str]:
    """The Makefile's BYOD_ENV (with BYOD_URI left empty, as `make byod` does)."""
    return {"LAKEHOUSE_MAPPING": str(mapping.resolve()), "LAKEHOUSE_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(data_dir / "dagster_home"), "LAKEHOUSE_URI": "", "LANDING_URI": "",
            "LAKEHOUSE_DUCKDB_PATH": ""}


CASES = {  # mapping, its dataset name, first and last day
    "listening": (ROOT / "examples" / "listening" / "mapping.yaml", "listening", dt.date(2026, 9, 1),
                  dt.date(2026, 9, 4)),
    "movielens": (ROOT / "examples" / "movielens" / "mapping.yaml", "movielens-100k", dt.date(1997, 9, 20),
                  dt.date(1997, 9, 25)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_byod_entry_points_from_a_fresh_clone(case, tmp_path, dbt_project_copy, monkeypatch):
    from lakehouse.io.settings import LakehouseSettings
    from orchestration.definitions import build_definitions
    from orchestration.demo import source_range

    mapping, name, first, last = CASES[case]
    data_dir = tmp_path / "byod"
    env = byod_env(mapping, data_dir)
    if case == "listening":
        generate_external(data_dir / "listening_source",
                          ExternalConfig(days=4, users=40, items=30, files=2, seed=5, ratings=True))
    else:
        write_movielens(tmp_path / "ml-100k")
        env["MOVIELENS_DIR"] = str(tmp_path / "ml-100k")
    (data_dir / "dagster_home").mkdir(parents=True)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # set, even when empty: that is what broke the dbt parse

    # 1. the check-only CLI, in a process of its own with exactly that environment
    out = subprocess.run([sys.executable, "-m", "lakehouse.mapped.importer", str(mapping)], cwd=ROOT,
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    days = (last - first).days + 1
    assert out.stdout.startswith(f"checked dataset (nothing written) {name!r}: {days} day(s) {first} .. {last}"), \
        out.stdout
    assert not (data_dir / "lakehouse").exists()  # nothing written

    # 2. the days `make byod` runs
    settings = LakehouseSettings.from_env()
    assert dataset_for(settings) == MAPPED and settings.duckdb_path == str(data_dir / "warehouse.duckdb")
    assert source_range(settings) == (first, last)

    # 3. the definitions, built from a dbt project never parsed before
    defs = build_definitions(settings, dbt_project_dir=str(dbt_project_copy))
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"landing/mapped_source", "bronze/mapped_interactions", "bronze/mapped_users",
            "marts/mapped_training_examples", "gold/training_examples", "champion_model"} <= keys, sorted(keys)
    assert (dbt_project_copy / "target" / "mapped" / "manifest.json").exists()
    assert defs.resolve_job_def("daily_recommendations_job")
