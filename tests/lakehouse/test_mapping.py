"""The mapping file of a bring-your-own-data dataset: parsing, derived columns, and errors that
name the file, the field and what was expected."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from lakehouse.mapping import MappingError, load_mapping, parse_mapping

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "listening" / "mapping.yaml"
RATINGS = ROOT / "examples" / "listening" / "ratings_mapping.yaml"

BASE = {
    "name": "listening",
    "source": "data",
    "interactions": {
        "path": "events",
        "format": "csv",
        "user": "listener",
        "item": "track",
        "timestamp": {"column": "ts", "unit": "ms"},
        "platform": "device",
        "context": {"categorical": ["network"], "numeric": ["battery"]},
        "event": {"column": "action", "take": ["play"], "complete": ["full_listen"], "music_like": ["like"]},
    },
    "users": {"path": "users.jsonl", "key": "listener_id", "categorical": ["country"], "numeric": ["age"]},
}


def write(tmp_path, data, name="my_mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def changed(edit) -> dict:
    data = copy.deepcopy(BASE)
    edit(data)
    return data


def test_example_mapping_parses_with_derived_columns(tmp_path):
    m = load_mapping(EXAMPLE, environ={"LAKEHOUSE_DATA_DIR": str(tmp_path)})
    assert m.name == "listening"
    assert m.source == str(tmp_path / "listening_source")
    assert m.mapping_path == str(EXAMPLE)
    it = m.interactions
    assert (it.user, it.item, it.platform, it.format) == ("listener", "track", "device", "csv")
    assert (it.timestamp.column, it.timestamp.unit, it.timestamp.timezone) == ("ts", "ms", "UTC")
    assert it.timestamp.is_epoch and not it.timestamp.is_iso
    assert it.event.value_types() == {"play": "take", "full_listen": "complete", "like": "music_like"}
    assert m.context_columns() == {"ctx_network": "categorical", "ctx_battery": "numeric"}
    assert m.user_columns() == {"user_attr_country": "categorical", "user_attr_plan": "categorical",
                                "user_attr_age": "numeric"}
    assert m.item_columns() == {"item_attr_genre": "categorical", "item_attr_artist": "categorical",
                                "item_attr_duration_s": "numeric"}
    assert m.has_platform and not m.has_rating
    assert m.heads_present == ("take", "complete", "music_like")
    assert m.users.format == "jsonl" and m.items.format is None
    assert m.uri("events") == str(tmp_path / "listening_source" / "events")
    d = json.loads(json.dumps(m.to_dict()))
    assert d["interactions"]["event"]["complete"] == ["full_listen"]
    assert d["context_columns"] == {"ctx_network": "categorical", "ctx_battery": "numeric"}
    assert "listening" in m.summary() and "ctx_network" in m.summary()


def test_ratings_example_and_minimal_mapping(tmp_path):
    r = load_mapping(RATINGS, environ={"LAKEHOUSE_DATA_DIR": str(tmp_path)})
    assert r.interactions.rating.positive_threshold == 4.0 and r.interactions.event is None
    assert r.interactions.timestamp.is_format and r.heads_present == ("take",)
    assert r.items is None and r.item_columns() == {} and not r.has_platform
    minimal = {"name": "m", "source": ".", "interactions": {
        "path": "log.parquet", "user": "u", "item": "i", "timestamp": {"column": "t", "unit": "iso"}}}
    m = load_mapping(write(tmp_path, minimal))
    assert m.context_columns() == {} and m.heads_present == ("take",) and m.users is None
    assert m.source == str(tmp_path)


def test_source_variables_relative_paths_and_s3(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    rel = load_mapping(write(sub, changed(lambda d: d.update(source="../raw"))), environ={})
    assert rel.source == str(tmp_path / "raw")  # relative to the mapping file, not the cwd
    dflt = load_mapping(write(sub, changed(lambda d: d.update(source="${NOPE:-fallback}/x"))), environ={})
    assert dflt.source == str(sub / "fallback" / "x")
    s3 = load_mapping(write(sub, changed(lambda d: d.update(source="s3://${BUCKET}/exports/"))),
                      environ={"BUCKET": "acme"})
    assert s3.source == "s3://acme/exports" and s3.uri("events") == "s3://acme/exports/events"
    with pytest.raises(MappingError, match=r"my_mapping.yaml: source: \$\{DATA_ROOT\} is not set"):
        load_mapping(write(sub, changed(lambda d: d.update(source="${DATA_ROOT}/x"))), environ={})
    with pytest.raises(MappingError, match=r"source: 'gs://b/x': expected a local folder or s3://"):
        load_mapping(write(sub, changed(lambda d: d.update(source="gs://b/x"))), environ={})


def _del_user(d):
    del d["interactions"]["user"]


def _bad_key(d):
    d["interactions"]["usr"] = d["interactions"].pop("user")


def _event_and_rating(d):
    d["interactions"]["rating"] = {"column": "stars", "positive_threshold": 4}


def _no_take(d):
    del d["interactions"]["event"]["take"]


@pytest.mark.parametrize("edit, message", [
    (_del_user, "interactions.user: missing required field (the user id column)"),
    (_bad_key, "interactions: unknown key 'usr' (did you mean 'user'?); valid keys: path, user, item"),
    (lambda d: d.update(interaction=d.pop("interactions")),
     "unknown key 'interaction' (did you mean 'interactions'?)"),
    (lambda d: d["interactions"]["context"].update(categorical="network"),
     "interactions.context.categorical: expected a list of column names such as [a, b], got str 'network'"),
    (lambda d: d["interactions"]["context"].update(numeric=[["battery"]]),
     "interactions.context.numeric[0]: expected a column name, got a list"),
    (lambda d: d["interactions"]["timestamp"].update(unit="sec"),
     "interactions.timestamp.unit: 'sec' is not a timestamp unit; expected s|ms|us|ns (epoch numbers), "
     "iso (ISO-8601 text) or a strptime format containing %"),
    (lambda d: d["interactions"].update(timestamp="ts"),
     "interactions.timestamp: expected a mapping with keys column, unit, timezone, got str 'ts'"),
    (lambda d: d["interactions"]["timestamp"].update(timezone="Mars/Olympus"),
     "interactions.timestamp.timezone: 'Mars/Olympus' is not a known IANA time zone"),
    (_event_and_rating, "interactions: `event` and `rating` given together"),
    (_no_take, "interactions.event.take: missing required field (the event value(s) that mean a positive"),
    (lambda d: d["interactions"]["event"].update(take=[]), "interactions.event.take: empty"),
    (lambda d: d["interactions"]["event"].update(complete=["play"]),
     "interactions.event.complete: value 'play' is also listed under take"),
    (lambda d: d["interactions"].update(platform="listener"),
     "interactions: column 'listener' is declared twice (as 'listener'): at interactions.user and at "
     "interactions.platform"),
    (lambda d: d["interactions"]["context"].update(numeric=["network"]),
     "column 'network' is declared twice (as 'network'): at interactions.context.categorical[0] and at "
     "interactions.context.numeric[0]"),
    (lambda d: d["users"].update(numeric=["listener_id"]),
     "users: column 'listener_id' is declared twice (as 'listener_id'): at users.key and at users.numeric[0]"),
    # two source names that become one bronze column
    (lambda d: d["interactions"]["context"].update(numeric=["Network!"]),
     "column 'Network!' is declared twice (as 'network')"),
    (lambda d: d["interactions"].update(item="::"),
     "interactions.item: '::' is not a usable column name; expected a name with at least one letter"),
    (lambda d: d["interactions"].update(format="xlsx"),
     "interactions.format: 'xlsx' is not a supported format; expected one of csv|parquet|jsonl"),
    (lambda d: d["interactions"].update(rating={"column": "stars", "positive_threshold": "four"}) or
     d["interactions"].pop("event"),
     "interactions.rating.positive_threshold: expected a number, got str 'four'"),
    (lambda d: d["users"].pop("key"), "users.key: missing required field (the id column joined"),
    (lambda d: d.update(name="my data"), "name: 'my data' is not a simple label"),
    (lambda d: d.update(source=None), "source: missing required field"),
])
def test_invalid_mappings_name_file_field_and_expectation(tmp_path, edit, message):
    path = write(tmp_path, changed(edit))
    with pytest.raises(MappingError) as err:
        load_mapping(path, environ={})
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text


def test_strptime_unit_accepted_and_file_errors(tmp_path):
    m = load_mapping(write(tmp_path, changed(
        lambda d: d["interactions"]["timestamp"].update(unit="%d/%m/%Y %H:%M", timezone="Europe/Paris"))))
    assert m.interactions.timestamp.is_format and m.interactions.timestamp.timezone == "Europe/Paris"
    with pytest.raises(MappingError, match="mapping file not found: .*nowhere.yaml"):
        load_mapping(tmp_path / "nowhere.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\ninteractions: [unclosed\n")
    with pytest.raises(MappingError, match="broken.yaml: not valid YAML"):
        load_mapping(bad)
    with pytest.raises(MappingError, match="inline: expected a mapping with keys name, source"):
        parse_mapping(["not", "a", "mapping"], origin="inline")
