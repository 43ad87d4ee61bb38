"""House rules that code review forgets: imports point one way, no machine paths in the repo."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN = {
    "simulator": {"orchestration", "assets", "lakehouse", "ml", "dagster", "dagster_dbt", "dagster_aws"},
    "lakehouse": {"orchestration", "assets", "dagster", "dagster_dbt", "dagster_aws"},
    "ml": {"orchestration", "assets", "dagster", "dagster_dbt", "dagster_aws"},
    "assets": {"orchestration"},
    "homefeed": {"orchestration", "assets", "lakehouse", "ml", "simulator", "dagster", "dagster_dbt",
                 "dagster_aws", "torch", "ray"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        bad = imported_roots(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, offenders


def test_no_private_dagster_imports():
    offenders = [str(p.relative_to(ROOT)) for pkg in ("orchestration", "assets", "tests")
                 for p in (ROOT / pkg).rglob("*.py") if "dagster._" in p.read_text()
                 and p.name != "test_layout.py"]
    assert not offenders, offenders


def test_no_machine_paths_or_secrets_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    needles = ("/work/", "/root/", "/home/", "/Users/", "AKIA", "BEGIN PRIVATE KEY")
    offenders = []
    for name in files:
        p = ROOT / name
        if p.suffix in {".png", ".parquet"} or not p.is_file() or name == "tests/test_layout.py":
            continue
        text = p.read_text(errors="ignore")
        offenders += [f"{name}: {n}" for n in needles if n in text]
    assert not offenders, offenders
