"""Where the lakehouse lives, decided by one setting.

``LAKEHOUSE_URI`` is a local folder (the embedded default: ``<project>/data/lakehouse``) or
``s3://bucket/prefix``. For S3, the endpoint and keys come from the standard AWS variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``).
Nothing here is read at import time: call :func:`LakehouseSettings.from_env`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"


def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


@dataclass(frozen=True)
class LakehouseSettings:
    uri: str  # lakehouse root: absolute folder or s3://bucket/prefix
    landing_uri: str  # where the app's exports land
    duckdb_path: str  # dbt's working database (always local: it is a cache of Delta)
    data_dir: str  # local folder for run state (DuckDB file, Dagster home, MLflow)
    # a bring-your-own-data mapping file (LAKEHOUSE_MAPPING); None: the simulator's fitness data
    mapping_path: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "LakehouseSettings":
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("LAKEHOUSE_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
        uri = env.get("LAKEHOUSE_URI") or str(data_dir / "lakehouse")
        return cls.build(
            uri=uri,
            landing_uri=env.get("LANDING_URI") or None,
            duckdb_path=env.get("LAKEHOUSE_DUCKDB_PATH") or str(data_dir / "warehouse.duckdb"),
            data_dir=str(data_dir),
            mapping_path=env.get("LAKEHOUSE_MAPPING") or None,
        )

    @classmethod
    def build(
        cls,
        uri: str,
        landing_uri: str | None = None,
        duckdb_path: str | None = None,
        data_dir: str | None = None,
        mapping_path: str | None = None,
    ) -> "LakehouseSettings":
        if not _is_s3(uri):
            if "://" in uri:
                raise ValueError(
                    f"LAKEHOUSE_URI={uri!r}: expected a local folder or s3://bucket/prefix"
                )
            uri = str(Path(uri).resolve())
        uri = uri.rstrip("/")
        data = Path(data_dir).resolve() if data_dir else DEFAULT_DATA_DIR
        return cls(
            uri=uri,
            landing_uri=(landing_uri or f"{uri}/landing").rstrip("/"),
            duckdb_path=str(duckdb_path or data / "warehouse.duckdb"),
            data_dir=str(data),
            mapping_path=str(Path(mapping_path).resolve()) if mapping_path else None,
        )

    @property
    def is_s3(self) -> bool:
        return _is_s3(self.uri)

    def table_uri(self, layer: str, name: str) -> str:
        return f"{self.uri}/{layer}/{name}"

    def storage_options(self) -> dict[str, str]:
        """deltalake storage options; empty for local folders."""
        return s3_storage_options() if self.is_s3 else {}


def backfill_days_per_run(environ: Mapping[str, str] | None = None) -> int | None:
    """``LAKEHOUSE_BACKFILL_DAYS_PER_RUN``: the most daily partitions one run takes. A backfill of
    more days is split into runs of that many (each stage then holds that many days, so memory
    follows it, not the backfill's length); unset: a backfill is one run (one commit per table)."""
    env = os.environ if environ is None else environ
    raw = (env.get("LAKEHOUSE_BACKFILL_DAYS_PER_RUN") or "").strip()
    if not raw:
        return None
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if days < 1:
        raise ValueError(f"LAKEHOUSE_BACKFILL_DAYS_PER_RUN={raw!r}: expected a whole number of days >= 1 "
                         "(or unset: a backfill is one run)")
    return days


def s3_storage_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """deltalake/object_store options for S3 from the standard AWS variables.

    Plain-HTTP endpoints (a loopback S3 server in tests) need AWS_ALLOW_HTTP; writers need a
    locking strategy on S3: ``conditional_put=etag`` is safe against concurrent writers.
    """
    env = os.environ if environ is None else environ
    opts: dict[str, str] = {"conditional_put": "etag"}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if env.get(key):
            opts[key] = env[key]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        opts["AWS_REGION"] = region
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    return opts
