"""homefeed is read by the app's service: it must stay free of the orchestrator and the model."""

from __future__ import annotations

from pathlib import Path

from tests.test_layout import imported_roots

FORBIDDEN = {"orchestration", "assets", "ml", "dagster", "dagster_dbt", "dagster_aws", "torch", "torchrec", "ray"}


def test_homefeed_imports_no_dagster_torch_or_ml():
    root = Path(__file__).resolve().parents[2] / "homefeed"
    offenders = {p.name: sorted(imported_roots(p) & FORBIDDEN) for p in root.rglob("*.py")}
    assert len(offenders) >= 5 and not any(offenders.values()), offenders
