"""One source for each gold rule: a dbt test or a Great Expectations check, never both.

A published mart's row rules (unique keys, not null, accepted values, ranges, relationships) are
dbt data tests of the mart: they run in `dbt build` and fail it before anything is published.
The gold GX suites (`lakehouse.quality.config.GOLD_TABLES`, `MAPPED_GOLD_TABLES`, run by `publish_gold`
on the staged rows) keep only what dbt cannot say: the row volume against the previous partition
of the committed table and the share of positives. `dbt parse` (both datasets, into tmp_path)
gives the dbt side; `Dataset.gold_suites` (`ml.datasets`), as the definitions call it, the GX side.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lakehouse.contract import DISCIPLINES, PLATFORMS
from lakehouse.publish import published_models
from lakehouse.quality.checks import (
    AcceptedValues,
    NotNull,
    PositiveRatio,
    Ranges,
    ReferentialIntegrity,
    RowVolume,
    SuiteSpec,
    UniqueKey,
)
from lakehouse.quality.config import GX_ONLY_CHECKS
from ml.datasets import dataset_named
from tests.dbt.dbt_cli import PROJECT_DIR, dbt_executable

K = 4  # negatives_per_positive

# The row rules the gold GX suites declared before they moved to dbt: (kind, column) -> what the
# dbt test must say (accepted values; the expression of a range; None: its existence).
MOVED_TO_DBT = {
    "fitness": {
        "user_features_daily": {
            ("unique", "user_id,feature_date"): None,
            ("not_null", "user_id"): None, ("not_null", "feature_date"): None,
            ("not_null", "workouts_total"): None,
            ("range", "workouts_7d"): ">= 0",
            ("range", "completion_rate_28d"): "between 0 and 1",
            ("range", "top_instructor_share"): "between 0 and 1",
        },
        "class_features_daily": {
            ("unique", "class_id,feature_date"): None,
            ("not_null", "class_id"): None, ("not_null", "feature_date"): None,
            ("not_null", "discipline"): None,
            ("accepted_values", "discipline"): list(DISCIPLINES),
            ("range", "age_days"): ">= 0",
            ("range", "completion_rate"): "between 0 and 1",
            ("range", "music_like_rate"): "between 0 and 1",
            ("range", "take_rate_7d"): "between 0 and 1",
        },
        "training_examples": {
            ("unique", "example_id"): None,
            ("not_null", "user_id"): None, ("not_null", "class_id"): None,
            ("not_null", "platform"): None, ("not_null", "label_take"): None,
            ("accepted_values", "platform"): list(PLATFORMS),
            ("accepted_values", "label_take"): [0, 1],
            ("range", "hour_of_day"): "between 0 and 23",
            ("range", "day_of_week"): "between 1 and 7",
            ("relationships", "user_id"): None, ("relationships", "class_id"): None,
        },
        "scoring_candidates": {
            ("unique", "feature_date,platform,class_id"): None,
            ("not_null", "feature_date"): None, ("not_null", "platform"): None,
            ("not_null", "class_id"): None,
            ("accepted_values", "platform"): list(PLATFORMS),
        },
    },
    "mapped": {
        "user_features_daily": {
            ("unique", "user_id,feature_date"): None,
            ("not_null", "user_id"): None, ("not_null", "feature_date"): None,
            ("not_null", "events_total"): None,
            ("range", "events_7d"): ">= 0",
            ("range", "events_total"): ">= 0",
            ("range", "complete_rate_28d"): "between 0 and 1",
            ("range", "usual_hour"): "between 0 and 23",
        },
        "class_features_daily": {
            ("unique", "class_id,feature_date"): None,
            ("not_null", "class_id"): None, ("not_null", "feature_date"): None,
            ("not_null", "release_date"): None,
            ("range", "age_days"): ">= 0",
            ("range", "events_total"): ">= 0",
            ("range", "complete_rate"): "between 0 and 1",
            ("range", "music_like_rate"): "between 0 and 1",
        },
        "training_examples": {
            ("unique", "example_id"): None,
            ("not_null", "user_id"): None, ("not_null", "class_id"): None,
            ("not_null", "platform"): None, ("not_null", "label_take"): None,
            ("accepted_values", "label_take"): [0, 1],
            ("accepted_values", "label_complete"): [0, 1],
            ("accepted_values", "label_music_like"): [0, 1],
            ("range", "hour_of_day"): "between 0 and 23",
            ("accepted_values", "day_of_week"): [1, 2, 3, 4, 5, 6, 7],
        },
        "scoring_candidates": {
            ("unique", "feature_date,platform,class_id"): None,
            ("not_null", "feature_date"): None, ("not_null", "platform"): None,
            ("not_null", "class_id"): None,
        },
    },
}


def gx_rules(spec: SuiteSpec) -> set[tuple[str, str]]:
    """The rules a suite declares, in the vocabulary of dbt_rules()."""
    out: set[tuple[str, str]] = set()
    for c in spec.checks:
        if isinstance(c, UniqueKey):
            out.add(("unique", ",".join(c.columns)))
        elif isinstance(c, NotNull):
            out |= {("not_null", col) for col in c.columns}
        elif isinstance(c, AcceptedValues):
            out |= {("accepted_values", col) for col in c.values}
        elif isinstance(c, Ranges):
            out |= {("range", col) for col in c.bounds}
        elif isinstance(c, ReferentialIntegrity):
            out |= {("relationships", col) for col in c.references}
        elif isinstance(c, PositiveRatio):
            out.add(("positive_ratio", c.column))
        elif isinstance(c, RowVolume):
            out.add(("row_volume_vs_previous", ""))
        else:  # pragma: no cover - a new check type: say which dbt test expresses it
            raise TypeError(f"unknown check type {type(c).__name__}")
    return out


def dbt_rules(manifest: dict, model_uid: str) -> dict[tuple[str, str], dict]:
    """(kind, column) -> {detail, severity, where} of every generic data test on the model.
    A column-level expression_is_true is a range (it continues the column's name)."""
    out: dict[tuple[str, str], dict] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "test" or node.get("attached_node") != model_uid:
            continue
        meta = node.get("test_metadata") or {}
        name, kwargs = meta.get("name"), meta.get("kwargs") or {}
        column = kwargs.get("column_name") or node.get("column_name") or ""
        detail = None
        if name == "unique_combination_of_columns":
            rule = ("unique", ",".join(kwargs["combination_of_columns"]))
        elif name == "expression_is_true":
            rule = ("range", column) if column else ("expression", kwargs["expression"])
            detail = kwargs["expression"]
        elif name == "accepted_values":
            rule, detail = (name, column), list(kwargs["values"])
        else:  # unique, not_null, relationships, a singular test
            rule = (name or node["name"], column)
        out[rule] = {"detail": detail, "severity": node["config"]["severity"],
                     "where": node["config"].get("where")}
    return out


def parse(work: Path, dataset: str) -> subprocess.Popen:
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_TARGET": "local",
           "LAKEHOUSE_URI": str(work / "lakehouse"), "LAKEHOUSE_DUCKDB_PATH": str(work / f"{dataset}.duckdb")}
    cmd = [dbt_executable(), "parse", "--vars", f'{{"dataset": "{dataset}"}}', "--quiet",
           "--target-path", str(work / f"target_{dataset}"), "--log-path", str(work / f"logs_{dataset}")]
    return subprocess.Popen(cmd, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict[str, dict]:
    import json

    work = tmp_path_factory.mktemp("gold_rules")
    procs = {d: parse(work, d) for d in ("fitness", "mapped")}  # both at once
    for dataset, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"dbt parse ({dataset}) failed:\n{out[-4000:]}\n{err[-2000:]}"
    return {d: json.loads((work / f"target_{d}" / "manifest.json").read_text()) for d in procs}


def gold_of(manifest: dict, dataset: str) -> dict[str, tuple[str, SuiteSpec | None]]:
    """gold table -> (its mart's unique_id, its GX suite or None), as the definitions build them."""
    published = {p.model: (uid, p.partition_by) for uid, p in published_models(manifest).items()}
    suites = {s.table: s.spec for s in dataset_named(dataset).gold_suites(
        {t: col for t, (_, col) in published.items()}, K)}
    return {t: (uid, suites.get(t)) for t, (uid, _) in published.items()}


@pytest.mark.parametrize("dataset", ["fitness", "mapped"])
def test_no_gold_rule_is_declared_twice(manifests, dataset):
    """A gold GX suite declares no rule its mart's dbt tests declare."""
    gold = gold_of(manifests[dataset], dataset)
    assert {"training_examples", "user_features_daily", "class_features_daily", "scoring_candidates"} <= set(gold)
    for table, (uid, spec) in gold.items():
        if spec is None:
            continue
        twice = gx_rules(spec) & set(dbt_rules(manifests[dataset], uid))
        assert not twice, f"gold/{table}: declared by its GX suite and by dbt tests of {uid}: {sorted(twice)}"


@pytest.mark.parametrize("dataset", ["fitness", "mapped"])
def test_gold_suites_keep_only_what_dbt_cannot_say(manifests, dataset):
    gold = gold_of(manifests[dataset], dataset)
    suites = {t: spec for t, (_, spec) in gold.items() if spec is not None}
    assert set(suites) == {"training_examples", "user_features_daily", "class_features_daily"}
    for table, spec in suites.items():
        assert set(spec.check_names) <= set(GX_ONLY_CHECKS), (table, spec.check_names)
    assert "positive_ratio" in suites["training_examples"].check_names


@pytest.mark.parametrize("dataset", ["fitness", "mapped"])
def test_moved_rules_are_blocking_dbt_tests(manifests, dataset):
    """Every row rule the gold suites used to declare is a dbt test of the mart, with severity
    error (it fails `dbt build`, so nothing is published), saying the same."""
    gold = gold_of(manifests[dataset], dataset)
    for table, expected in MOVED_TO_DBT[dataset].items():
        uid, _ = gold[table]
        declared = dbt_rules(manifests[dataset], uid)
        missing = sorted(set(expected) - set(declared))
        assert not missing, f"gold/{table}: no dbt test of {uid} for {missing}"
        for rule, detail in expected.items():
            test = declared[rule]
            assert test["severity"] == "ERROR", (table, rule, test)
            if detail is not None:
                assert test["detail"] == detail, (table, rule, test)
            # ranges ignore nulls on nullable columns only; nothing else is filtered
            assert test["where"] is None or test["where"] == f"{rule[1]} is not null", (table, rule, test)
