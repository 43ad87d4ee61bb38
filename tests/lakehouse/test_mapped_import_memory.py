"""The mapped import reads, checks and writes in bounded memory: a Parquet source of a few
hundred MB is checked (dry run) and imported by a child process whose peak resident memory,
the baseline of the same imports set aside, stays within a few batches' worth, far below what
reading the file whole takes (several times its size).

Each child reports its own peak (VmHWM, or ru_maxrss), so nothing else this test process ran
counts. The figures are printed (run with -s to see them)."""

from __future__ import annotations

import binascii
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.extra]  # about 40 s: `make test-extra`

ROWS = 3_000_000  # about 280 MB of Parquet, 3 row groups
DAYS = 28
MB = 1 << 20

PEAK = textwrap.dedent("""
    import json, resource, sys

    def peak_mb() -> float:
        try:
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
""")

BASELINE = PEAK + textwrap.dedent("""
    import duckdb, deltalake, polars, pyarrow.parquet
    import lakehouse.mapped.importer
    print(json.dumps({"peak_mb": peak_mb()}))
""")

IMPORT = PEAK + textwrap.dedent("""
    from lakehouse.io.settings import LakehouseSettings
    from lakehouse.mapped.importer import import_dataset
    from lakehouse.mapped.mapping_file import parse_mapping

    src, lake, mode = sys.argv[1:4]
    mapping = parse_mapping({"name": "big", "source": src, "interactions": {
        "path": "events.parquet", "user": "user", "item": "track",
        "timestamp": {"column": "ts", "unit": "ms"}, "platform": "device",
        "context": {"categorical": ["session"], "numeric": ["battery"]},
        "event": {"column": "action", "take": ["play"], "complete": ["full_listen"], "music_like": ["like"]}}},
        origin="big.yaml")
    report = import_dataset(LakehouseSettings.build(uri=lake, data_dir=lake + "_state"), mapping,
                            dry_run=mode == "dry_run", log=None)
    print(json.dumps({"peak_mb": peak_mb(), "rows_written": report.tables["mapped_interactions"].rows_written,
                      "days": len(report.days_written), "version": report.tables["mapped_interactions"].version}))
""")


def write_events(path: Path, rows: int, seed: int = 0) -> None:
    """A listening log with high-entropy columns (ids, times, a 64-hex session id), so that the
    file's size is the data the import must read, row group by row group (1M rows each)."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([("user", pa.string()), ("track", pa.string()), ("ts", pa.int64()),
                        ("action", pa.string()), ("device", pa.string()), ("battery", pa.float64()),
                        ("session", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 1 << 20):
            n = min(1 << 20, rows - start)
            session = np.frombuffer(binascii.hexlify(rng.bytes(n * 32)), dtype="S64")
            writer.write_table(pa.table({
                "user": pc.binary_join_element_wise(
                    "user_", pa.array(rng.integers(0, 2_000_000, n)).cast(pa.string()), ""),
                "track": pc.binary_join_element_wise(
                    "track-", pa.array(rng.integers(0, 200_000, n)).cast(pa.string()), ""),
                "ts": pa.array(1788220800000 + rng.integers(0, DAYS * 86_400_000, n)),
                "action": pa.array(np.array(["play", "skip", "like", "full_listen"])[rng.integers(0, 4, n)]),
                "device": pa.array(np.array(["phone", "desktop", "speaker"])[rng.integers(0, 3, n)]),
                "battery": pa.array(rng.random(n) * 100),
                "session": pa.array(session).cast(pa.string()),
            }, schema=schema))


def child(code: str, *args: str) -> dict:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_source_of_several_hundred_mb_is_imported_in_bounded_memory(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_events(src / "events.parquet", ROWS)
    size_mb = (src / "events.parquet").stat().st_size / MB
    assert size_mb > 250

    baseline = child(BASELINE)["peak_mb"]
    lake = str(tmp_path / "lake")
    dry = child(IMPORT, str(src), lake, "dry_run")
    real = child(IMPORT, str(src), lake, "import")
    print(f"\nsource {size_mb:.0f} MB, {ROWS:,} rows over {DAYS} days; peak RSS: baseline {baseline:.0f} MB, "
          f"dry run {dry['peak_mb']:.0f} MB, import {real['peak_mb']:.0f} MB")

    assert dry["rows_written"] == real["rows_written"] == ROWS and real["days"] == DAYS
    assert real["version"] is not None and dry["version"] is None
    # bounded: the import holds a few batches, not the file. It needs about 250-300 MB over the
    # baseline whatever the file's size (measured by hand: 2 GB of Parquet, 23M rows: 443 MB dry
    # run, 478 MB import, baseline 180 MB); the version it replaced needed 5.3 GB for 364 MB
    # (15x the file): reading the file whole, decoded, takes several times its size.
    bound = baseline + 1.5 * size_mb
    assert dry["peak_mb"] < bound, (dry, baseline, size_mb)
    assert real["peak_mb"] < bound, (real, baseline, size_mb)
    # the staging folder is gone
    assert not list(Path(lake + "_state").glob("mapped-import-*"))
