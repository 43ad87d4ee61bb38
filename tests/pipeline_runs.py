"""Real Dagster runs of the lakehouse job on tiny simulated data, and what they committed: the
helpers the pipeline-level tests share (fault injection, corrections, backfill vs daily).

A snapshot is every bronze and gold table without run bookkeeping, sorted by its key, so two
lakehouses compare row for row (`assert_same`)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lakehouse.contract import ENTITIES
from lakehouse.io import delta
from lakehouse.io.settings import LakehouseSettings

ROOT = Path(__file__).resolve().parents[1]
DAY1 = dt.date(2026, 9, 1)
DAY2, DAY3 = DAY1 + dt.timedelta(days=1), DAY1 + dt.timedelta(days=2)
E2E_DAYS = 6  # the end-to-end tests' landing: seed 7, days DAY1 .. DAY1 + 5 (conftest `tiny_built`)
BRONZE_KEYS = {e.name: tuple(e.key) for e in ENTITIES}
# gold table -> (primary key, partition column), as the marts' dbt tests declare them
GOLD = {
    "user_features_daily": (("user_id", "feature_date"), "feature_date"),
    "class_features_daily": (("class_id", "feature_date"), "feature_date"),
    "training_examples": (("example_id",), "event_date"),
    "scoring_candidates": (("feature_date", "platform", "class_id"), "feature_date"),
    "user_instructor_affinity": (("feature_date", "user_id", "instructor_id"), "feature_date"),
}


# ---------------------------------------------------------------- lakehouses and runs

def lake_settings(data: Path) -> LakehouseSettings:
    return LakehouseSettings.build(uri=str(data / "lakehouse"), data_dir=str(data))


# settings a developer's shell may hold; a run here must not fall back to their lakehouse
AMBIENT = ("LAKEHOUSE_URI", "LANDING_URI", "LAKEHOUSE_DUCKDB_PATH")


def run_job(settings: LakehouseSettings, day: dt.date | None = None,
            days: tuple[dt.date, dt.date] | None = None, *, tags: dict | None = None,
            instance: dg.DagsterInstance | None = None, job: str = "daily_lakehouse_job",
            run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """A real job of the code location (the daily lakehouse job by default) for one day, one
    range of days (as a backfill does), or the partition tags given."""
    from orchestration.definitions import build_definitions

    if tags is None:
        tags = ({"dagster/partition": day.isoformat()} if day else
                {"dagster/asset_partition_range_start": days[0].isoformat(),
                 "dagster/asset_partition_range_end": days[1].isoformat()})
    job_def = build_definitions(settings).resolve_job_def(job)
    with pytest.MonkeyPatch.context() as mp:
        for k in AMBIENT:
            mp.delenv(k, raising=False)
        mp.setenv("LAKEHOUSE_DATA_DIR", settings.data_dir)
        return job_def.execute_in_process(instance=instance or dg.DagsterInstance.ephemeral(), tags=tags,
                                          run_config=run_config, raise_on_error=False)


def errors(result) -> list[str]:
    """Each failed step's error as raised by our code ("<module>.<Class>: <message>"), below
    Dagster's wrapper."""
    out = []
    for e in result.all_events:
        if e.event_type_value == "STEP_FAILURE":
            err = e.event_specific_data.error
            while err.cls_name.startswith("Dagster") and err.cause is not None:
                err = err.cause
            out.append(err.message.strip())
    return out


def assert_ok(result) -> None:
    assert result.success, errors(result)


def copy_lake(src: Path, dst: Path) -> LakehouseSettings:
    shutil.copytree(src, dst)
    return lake_settings(dst)


# ---------------------------------------------------------------- what is committed

def frame(settings: LakehouseSettings, layer: str, name: str, where: pl.Expr | None = None) -> pl.DataFrame:
    """A table's rows without run bookkeeping (`_ingested_at`, `_source_file`: they name the
    run's time and folder), sorted by its key so two lakehouses compare row for row."""
    df = delta.read(settings.table_uri(layer, name), where=where)
    if name == "quarantine":
        df = df.drop("quarantined_at", "source_file", strict=False)
        return df.sort(["entity", "landing_date", "row_number", "reason"]) if df.height else df
    df = df.drop([c for c in df.columns if c.startswith("_")])
    key = BRONZE_KEYS.get(name) if layer == "bronze" else GOLD[name][0]
    return df.sort(list(key)) if df.height else df


def snapshot(settings: LakehouseSettings) -> dict[str, pl.DataFrame]:
    out = {f"bronze/{e}": frame(settings, "bronze", e) for e in [*BRONZE_KEYS, "quarantine"]}
    out.update({f"gold/{g}": frame(settings, "gold", g) for g in GOLD})
    return out


def versions(settings: LakehouseSettings) -> dict[str, int | None]:
    tables = [("bronze", e) for e in [*BRONZE_KEYS, "quarantine"]] + [("gold", g) for g in GOLD]
    return {f"{layer}/{name}": delta.table_version(settings.table_uri(layer, name)) for layer, name in tables}


def key_of(table: str) -> tuple[str, ...]:
    layer, name = table.split("/")
    return BRONZE_KEYS[name] if layer == "bronze" else GOLD[name][0]


def count_rows(snap: dict[str, pl.DataFrame]) -> tuple[int, int]:
    """(rows present, rows distinct by primary key) over bronze and gold (not the quarantine)."""
    present = distinct = 0
    for table, df in snap.items():
        if table == "bronze/quarantine":
            continue
        present += df.height
        distinct += df.select(key_of(table)).unique().height if df.height else 0
    return present, distinct


def assert_same(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    assert got.keys() == want.keys()
    for table in want:
        try:
            # floats: running sums recomputed in another order may differ in the last bits
            assert_frame_equal(got[table], want[table], check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
        except AssertionError as exc:
            raise AssertionError(f"{table}: {exc}") from None


def record_rows(fault_drill, got: dict[str, pl.DataFrame], expected: dict[str, pl.DataFrame]) -> None:
    """Record committed rows: `expected` must all be in `got`, once (primary keys distinct)."""
    present, distinct = count_rows(got)
    fault_drill.rows(expected=count_rows(expected)[1], present=present, distinct=distinct)
    assert fault_drill.rows_lost == 0 and fault_drill.rows_duplicated == 0, vars(fault_drill)


def committed_before(snap: dict[str, pl.DataFrame], day: dt.date) -> dict[str, pl.DataFrame]:
    """The rows of every day but `day` (what was committed before a fault on `day`)."""
    out = {}
    for table, df in snap.items():
        layer, name = table.split("/")
        col = "landing_date" if layer == "bronze" else GOLD[name][1]
        out[table] = df.filter(pl.col(col) != day) if df.height else df
    return out


def day_rows(snap: dict[str, pl.DataFrame], day: dt.date, *, on: bool) -> dict[str, pl.DataFrame]:
    """The gold rows of `day` (on=True) or of every other day (on=False)."""
    out = {}
    for g, (_, col) in GOLD.items():
        df = snap[f"gold/{g}"]
        out[g] = df.filter((pl.col(col) == day) if on else (pl.col(col) != day))
    return out


# ---------------------------------------------------------------- shared lakehouses

def simulate(landing: str, days: int, seed: int = 11) -> None:
    subprocess.run([sys.executable, "-m", "simulator", "generate", "--size", "tiny", "--seed", str(seed),
                    "--days", str(days), "--start-date", DAY1.isoformat(), "--landing", landing],
                   check=True, capture_output=True, cwd=ROOT)


def landing_file(settings: LakehouseSettings, entity: str, day: dt.date) -> Path:
    (path,) = (Path(settings.landing_uri) / entity / f"date={day.isoformat()}").glob("*.parquet")
    return path


# ---------------------------------------------------------------- the model's job

# a model small enough to train in seconds on the tiny lakehouse, large enough to beat popularity
TINY_MODEL = {"train_days": 4, "valid_days": 1, "epochs": 2, "batch_size": 256,
              "embedding_dim": 8, "bottom_mlp": [16, 8], "top_mlp": [32], "lr": 0.005}


# The evaluation and promotion gate on tiny data, for tests that need a champion to serve: 80-200
# lists cannot put the lower bound of a ratio to popularity above 1, so the first-model rule is
# off and the minimum of lists lowered. The rule itself: tests/ml/test_promotion.py; the
# end-to-end model test runs the production gate on its second model.
TINY_GATE = {"first_must_beat_popularity": False}
# every held-out user; peers off where a test is about serving (the model test turns them on)
TINY_EVAL = {"eval_user_fraction": 1.0, "min_lists": 50, "peers": False}


def train_run_config(model_config: dict, gate: dict | None = TINY_GATE,
                     evaluation: dict | None = None) -> dict:
    """Run config of train_model_job: the model's, the evaluation's (default: TINY_EVAL with the
    tiny gate, every user and the production minimum of lists with the production gate) and the
    gate's (None: the production gate)."""
    if evaluation is None:
        evaluation = TINY_EVAL if gate is not None else {"eval_user_fraction": 1.0}
    # the retrieval model in process: the DLRM's run already takes the Ray Train path
    ops = {"dlrm_model": {"config": model_config}, "model_evaluation": {"config": evaluation},
           "retrieval_model": {"config": {"use_ray": False}}}
    if gate is not None:
        ops["champion_model"] = {"config": gate}
    return {"ops": ops}


def run_train_job(settings: LakehouseSettings, instance: dg.DagsterInstance, model_config: dict,
                  gate: dict | None = TINY_GATE, evaluation: dict | None = None,
                  without: tuple[str, ...] = ()):
    """The train job (train, evaluate on every held-out user, promote) as a user launches it;
    `without`: assets of the job left out (e.g. "retrieval_model" where a test has no use for it)."""
    from orchestration.definitions import build_definitions

    defs = build_definitions(settings)
    job = defs.resolve_job_def("train_model_job")
    keep = None
    if without:
        ml = defs.resolve_asset_graph().asset_keys_for_group("ml")
        keep = [k for k in ml if k.to_user_string() not in without]
    config = train_run_config(model_config, gate, evaluation)
    config["ops"] = {k: v for k, v in config["ops"].items() if k not in without}
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=keep,
                                  run_config=config)


def correct_day(settings, day, keep: float = 0.7) -> tuple[int, int]:
    """The app re-exports `day` with some workouts removed (cancelled, de-duplicated upstream)
    and writes a new manifest; returns (rows before, rows after)."""
    import pyarrow.parquet as pq

    from tests.landing_factory import seal

    path = landing_file(settings, "workouts", day)
    table = pq.read_table(path)
    kept = table.slice(0, int(table.num_rows * keep))
    pq.write_table(kept, path)
    seal(path.parents[2], day)
    return table.num_rows, kept.num_rows
