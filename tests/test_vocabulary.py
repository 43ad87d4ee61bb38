"""The vocabulary is defined once and every copy of it agrees.

The platform's vocabulary (platforms, equipment, disciplines, body focus, fitness levels) is
defined in lakehouse/contract.py; everything that may import the lakehouse imports it from there.
Four copies must exist, because of who may import what (tests/test_layout.py):
- simulator/vocab.py: the simulator plays the outside world and imports nothing from the lakehouse;
- ml/features.py: the model ships its own vocabulary with its encoders;
- homefeed/cache.py: the read service imports nothing from the lakehouse;
- dbt_project/: the vars `platforms` and `disciplines` (dbt_project.yml), the accepted_values tests
  of the fitness models and the per-value columns of user_features_daily.

The mapped dataset's vocabulary (model heads, event types, bronze column prefixes) is defined in
lakehouse/mapped/mapping.py; the model's copies (ml/batch.py, ml/features.py) agree with it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lakehouse import contract
from lakehouse.mapped import mapping

ROOT = Path(__file__).resolve().parents[1]
DBT = ROOT / "dbt_project"

VOCABULARY = {
    "PLATFORMS": contract.PLATFORMS,
    "EQUIPMENT": contract.EQUIPMENT,
    "DISCIPLINES": contract.DISCIPLINES,
    "BODY_FOCUS": contract.BODY_FOCUS,
    "FITNESS_LEVELS": contract.FITNESS_LEVELS,
}
# a dbt column whose name ends with the key holds values of that vocabulary
# (platform, last_platform; discipline, primary_discipline, top_discipline, ...)
DBT_COLUMNS = {
    "platform": contract.PLATFORMS,
    "equipment": contract.EQUIPMENT,
    "discipline": contract.DISCIPLINES,
    "body_focus": contract.BODY_FOCUS,
    "fitness_level": contract.FITNESS_LEVELS,
}


def test_the_contract_defines_each_value_once():
    for name, values in VOCABULARY.items():
        assert values and len(set(values)) == len(values), name
        assert all(isinstance(v, str) and v == v.strip() and v for v in values), name
    for entity in contract.ENTITIES:
        for col in entity.columns:
            if col.accepted is not None:
                assert any(col.accepted is v for v in VOCABULARY.values()), \
                    f"{entity.name}.{col.name}: accepted values not taken from the vocabulary"


@pytest.mark.parametrize("name", sorted(VOCABULARY))
def test_the_simulator_writes_the_contract_vocabulary(name):
    from simulator import vocab

    assert getattr(vocab, name) == VOCABULARY[name]


def test_the_simulators_tables_cover_every_discipline_and_platform():
    """The simulator's per-discipline and per-platform tables are indexed by position: one row per
    value of the vocabulary, none missing, none extra."""
    from simulator import vocab as V

    n = len(contract.DISCIPLINES)
    for table in ("DISCIPLINE_EQUIPMENT", "INSTRUCTOR_DISCIPLINE_P", "OUTPUT_RATE", "DURATION_P",
                  "BODY_FOCUS_P", "GENRE_P", "DIFFICULTY_MEAN"):
        assert len(getattr(V, table)) == n, table
    assert set(V.SECONDARY) == set(V.TITLE_WORD) == set(contract.DISCIPLINES)
    assert {d for ds in V.SECONDARY.values() for d in ds} <= set(contract.DISCIPLINES)
    assert set(V.BODY_TITLE) == set(contract.BODY_FOCUS)
    assert (V.BIKE, V.TREAD, V.APP) == tuple(contract.PLATFORMS.index(p) for p in ("bike", "tread", "app"))
    assert set(V.PLATFORM_OFFERS) == set(range(len(contract.PLATFORMS)))
    assert {int(e) for e in V.DISCIPLINE_EQUIPMENT} <= set(range(len(contract.EQUIPMENT)))


def test_the_model_ships_the_same_vocabulary():
    from ml.batch import HEADS
    from ml.features import CTX_PREFIX, DISCIPLINES, ITEM_ATTR_PREFIX, PLATFORMS, USER_ATTR_PREFIX

    assert DISCIPLINES == contract.DISCIPLINES
    assert PLATFORMS == contract.PLATFORMS
    assert HEADS == mapping.HEADS
    assert (CTX_PREFIX, USER_ATTR_PREFIX, ITEM_ATTR_PREFIX) == \
        (mapping.CTX_PREFIX, mapping.USER_ATTR_PREFIX, mapping.ITEM_ATTR_PREFIX)


def test_the_read_service_serves_the_contract_platforms():
    from homefeed.cache import PLATFORM_ID, PLATFORMS

    assert PLATFORMS == contract.PLATFORMS
    # every platform of either dataset is a platform id the service accepts
    for platform in (*contract.PLATFORMS, mapping.IMPLICIT_PLATFORM):
        assert PLATFORM_ID.fullmatch(platform), platform


def test_the_mapped_bronze_suite_accepts_the_mapped_event_types():
    from lakehouse.quality.suites import mapped_bronze_suite

    accepted = mapped_bronze_suite().check("accepted_values").values["event_type"]
    assert accepted is mapping.EVENT_TYPES
    assert set(mapping.HEADS) <= set(mapping.EVENT_TYPES)


def test_dbt_vars_are_the_contract_vocabulary():
    project = yaml.safe_load((DBT / "dbt_project.yml").read_text())
    assert tuple(project["vars"]["disciplines"]) == contract.DISCIPLINES
    assert tuple(project["vars"]["platforms"]) == contract.PLATFORMS


def _accepted_values(node, found: list[tuple[str, list]], where: str = "") -> None:
    """(column, values) of every accepted_values test under `node` (a parsed dbt YAML)."""
    if isinstance(node, list):
        for item in node:
            _accepted_values(item, found, where)
    elif isinstance(node, dict):
        column = node.get("name", where) if "data_tests" in node or "tests" in node else where
        for key, value in node.items():
            if key == "accepted_values" and isinstance(value, dict):
                values = (value.get("arguments") or value).get("values")
                found.append((column, values))
            else:
                _accepted_values(value, found, column)


def fitness_model_files() -> list[Path]:
    files = sorted(p for p in (DBT / "models").rglob("*.yml") if "mapped" not in p.relative_to(DBT).parts)
    assert files
    return files


def test_dbt_accepted_values_are_the_contract_vocabulary():
    checked = set()
    for path in fitness_model_files():
        found: list[tuple[str, list]] = []
        _accepted_values(yaml.safe_load(path.read_text()), found)
        for column, values in found:
            for suffix, vocabulary in DBT_COLUMNS.items():
                if column == suffix or column.endswith("_" + suffix):
                    assert sorted(values) == sorted(vocabulary), f"{path.relative_to(ROOT)}: {column}"
                    checked.add(suffix)
    # not vacuous: every vocabulary is tested somewhere in the fitness models
    assert checked == set(DBT_COLUMNS), checked


def test_dbt_per_value_columns_are_the_contract_vocabulary():
    """user_features_daily has a share column per discipline and a usual hour per platform (built
    from the vars); its documentation and its sum-to-one test name each of them."""
    marts = yaml.safe_load((DBT / "models" / "marts" / "_marts.yml").read_text())
    (model,) = [m for m in marts["models"] if m["name"] == "user_features_daily"]
    columns = [c["name"] for c in model["columns"]]
    assert [c[len("share_"):] for c in columns if c.startswith("share_")] == list(contract.DISCIPLINES)
    assert [c[len("usual_hour_"):] for c in columns if c.startswith("usual_hour_")] == list(contract.PLATFORMS)
    expressions = [str(t) for t in model.get("data_tests", []) if "share_" in str(t)]
    assert len(expressions) == 1, expressions
    assert re.findall(r"share_(\w+)", expressions[0]) == list(contract.DISCIPLINES)
