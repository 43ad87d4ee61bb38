"""dbt-duckdb plugin: make DuckDB extensions load offline from their pip wheels.

DuckDB normally downloads extensions (``INSTALL delta``) from extensions.duckdb.org. This project
installs them as Python wheels instead (``duckdb-extension-delta``, ``duckdb-extension-httpfs``),
which ship the binary under ``duckdb_extension_<name>/extensions/<duckdb version>/``.

Before dbt-duckdb opens its connection, this plugin

1. picks a local extension directory (plugin config ``extension_directory``, else the env var
   ``DUCKDB_EXTENSION_DIRECTORY``, else ``.duckdb_extensions/`` next to the DuckDB file),
2. copies every extension listed under ``extensions:`` in the profile from its wheel into that
   directory (DuckDB's ``INSTALL '<file>'``, done once; nothing is downloaded),
3. sets ``extension_directory`` on the connection config,

so dbt-duckdb's own ``INSTALL <name>; LOAD <name>`` for the profile's ``extensions:`` finds them
locally, and DuckDB's autoloading (e.g. httpfs for ``CREATE SECRET (TYPE s3 ...)``) works offline.
It also creates the DuckDB file's parent folder. No path of any machine is written down: the
wheel location is found through ``importlib`` at run time.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pathlib
import tempfile
from typing import Any, Dict, Iterable

import duckdb
from dbt.adapters.duckdb.plugins import BasePlugin


def wheel_extension_file(name: str, duckdb_version: str) -> pathlib.Path | None:
    """The extension binary shipped by the ``duckdb-extension-<name>`` wheel, if installed."""
    try:
        module = importlib.import_module(f"duckdb_extension_{name}")
    except ImportError:
        return None
    root = pathlib.Path(module.__file__).resolve().parent / "extensions" / duckdb_version
    path = root / f"{name}.duckdb_extension"
    if not path.exists():
        shipped = sorted(p.name for p in root.parent.iterdir()) if root.parent.is_dir() else []
        raise RuntimeError(
            f"duckdb-extension-{name} ships {shipped}, not DuckDB {duckdb_version}: "
            f"install the duckdb-extension-{name} release matching duckdb"
        )
    return path


@contextlib.contextmanager
def _locked(directory: str):
    """Serialise installs into one directory across processes (two dbt runs starting together)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: installs are rare and idempotent
        yield
        return
    with open(os.path.join(directory, ".install.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install_from_wheels(directory: str, names: Iterable[str]) -> list[str]:
    """Install the named extensions from their wheels into ``directory``; return those installed."""
    os.makedirs(directory, exist_ok=True)
    with _locked(directory):
        return _install(directory, names)


def _install(directory: str, names: Iterable[str]) -> list[str]:
    con = duckdb.connect(":memory:", config={"extension_directory": directory})
    installed = []
    try:
        version = con.execute("PRAGMA version").fetchone()[0]
        platform = con.execute("PRAGMA platform").fetchone()[0]
        for name in names:
            target = pathlib.Path(directory) / version / platform / f"{name}.duckdb_extension"
            if target.exists():
                continue
            source = wheel_extension_file(name, version)
            if source is None:
                # Not shipped as a wheel (or statically linked like json/parquet): leave it to DuckDB.
                continue
            con.execute(f"INSTALL '{source.as_posix()}'")
            installed.append(name)
    finally:
        con.close()
    return installed


def _extension_names(creds: Any) -> list[str]:
    names = []
    for ext in getattr(creds, "extensions", None) or []:
        names.append(ext if isinstance(ext, str) else ext.get("name"))
    return [n for n in names if n]


class Plugin(BasePlugin):
    def initialize(self, plugin_config: Dict[str, Any]):
        self._directory = plugin_config.get("extension_directory")
        self._extra = list(plugin_config.get("extensions") or [])

    def _default_directory(self, creds: Any) -> str:
        env = os.environ.get("DUCKDB_EXTENSION_DIRECTORY")
        if env:
            return env
        path = getattr(creds, "path", None) or ":memory:"
        if path == ":memory:" or ":" in path.split("/")[0]:
            return os.path.join(tempfile.gettempdir(), "duckdb_extensions")
        return os.path.join(os.path.dirname(os.path.abspath(path)), ".duckdb_extensions")

    def update_connection_config(self, creds: Any, config: Dict[str, Any]):
        path = getattr(creds, "path", None)
        if path and path != ":memory:" and ":" not in path.split("/")[0]:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        directory = config.get("extension_directory") or self._directory or self._default_directory(creds)
        directory = os.path.abspath(directory)
        install_from_wheels(directory, dict.fromkeys(_extension_names(creds) + self._extra))
        config["extension_directory"] = directory
