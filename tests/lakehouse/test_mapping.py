"""The mapping file of a bring-your-own-data dataset: parsing, derived columns, and errors that
name the file, the field and what was expected."""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from lakehouse.mapped.mapping import MappingError
from lakehouse.mapped.mapping_file import load_mapping, parse_mapping

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
    (lambda d: d["users"].update(multi_valued={"age": "|"}),
     "users.multi_valued.age: 'age' is not one of users.categorical ['country']; only a categorical "
     "column can hold several values"),
    (lambda d: d["users"].update(multi_valued={"country": ""}),
     "users.multi_valued.country: expected the separator of its values as a non-empty string"),
    (lambda d: d["users"].update(multi_valued=["country"]),
     "users.multi_valued: expected a mapping of categorical column -> separator"),
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
    bad.write_text("name: x\nfirst_day: 2026-13-01\n")  # YAML reads it as a date that does not exist
    with pytest.raises(MappingError, match=r"broken.yaml: not valid YAML \(month must be in 1..12\)"):
        load_mapping(bad)
    with pytest.raises(MappingError, match="inline: expected a mapping with keys name, source"):
        parse_mapping(["not", "a", "mapping"], origin="inline")


def test_every_problem_of_a_mapping_is_reported_at_once_with_its_line(tmp_path):
    path = tmp_path / "typos.yaml"
    path.write_text(
        "name: my data\n"                  # 1: not a simple label
        "sorce: data\n"                    # 2: unknown key; `source` missing
        "interactions:\n"                  # 3
        "  path: events\n"                 # 4
        "  usr: listener\n"                # 5: unknown key; `user` missing
        "  item: 42\n"                     # 6: wrong type
        "  delimiter: ';;'\n"              # 7: not one character
        "  timestamp:\n"                   # 8
        "    column: ts\n"                 # 9
        "    unit: sec\n"                  # 10: not a unit
        "    timzone: UTC\n"               # 11: unknown key
        "  context:\n"                     # 12
        "    categorical: network\n"       # 13: not a list
        "  event: {column: action, take: [play], complete: [play]}\n"  # 14: a value under two heads
        "users:\n"                         # 15
        "  path: users.jsonl\n"            # 16
        "  kee: listener_id\n"             # 17: unknown key; `key` missing
        "first_day: 01/09/2026\n")         # 18: not a date
    with pytest.raises(MappingError) as err:
        load_mapping(path, environ={})
    text = str(err.value)
    expected = [
        "name: 'my data' is not a simple label; expected letters, digits, '_', '-' or '.' (line 1)",
        "  - unknown key 'sorce' (did you mean 'source'?); valid keys: name, source, interactions, users, "
        "items, first_day, evaluation (line 2)",
        "source: missing required field (the folder or s3://bucket/prefix holding the files)",
        "interactions: unknown key 'usr' (did you mean 'user'?); valid keys: path, user, item, timestamp, "
        "format, platform, context, event, rating, delimiter (line 5)",
        "interactions.user: missing required field (the user id column) (line 3)",
        "interactions.item: expected a column name, got int 42 (line 6)",
        "interactions.delimiter: expected a single character such as \",\", \";\" or \"\\t\", got str ';;' (line 7)",
        "interactions.timestamp.unit: 'sec' is not a timestamp unit; expected s|ms|us|ns (line 10)"[:60],
        "interactions.timestamp: unknown key 'timzone' (did you mean 'timezone'?); valid keys: column, "
        "unit, timezone (line 11)",
        "interactions.context.categorical: expected a list of column names such as [a, b], got str "
        "'network' (line 13)",
        "interactions.event.complete: value 'play' is also listed under take; each event value belongs "
        "to one head (line 14)",
        "users: unknown key 'kee' (did you mean 'key'?); valid keys: path, key, format, categorical, "
        "numeric, delimiter, multi_valued (line 17)",
        "users.key: missing required field (the id column joined to the interactions) (line 15)",
        "first_day: '01/09/2026' is not a date; expected YYYY-MM-DD",
    ]
    assert text.startswith(f"{path}: {len(expected)} problems in the mapping file; fix them all and re-run:\n"), text
    for piece in expected:
        assert piece in text, (piece, text)
    assert text.count("\n  - ") == len(expected)
    lines = [int(n) for n in re.findall(r"\(line (\d+)\)$", text, re.MULTILINE)]
    assert lines == sorted(lines)  # in the file's order


def test_the_evaluation_protocol_is_read_and_a_wrong_option_named(tmp_path):
    from lakehouse.mapped.mapping_file import parse_mapping

    base = {"name": "x", "source": str(tmp_path),
            "interactions": {"path": "e.csv", "user": "u", "item": "i",
                             "timestamp": {"column": "t", "unit": "s"}}}
    assert parse_mapping(base, origin="m.yaml").evaluation.exclude_seen_days == 14  # the default
    m = parse_mapping({**base, "evaluation": {"exclude_seen": "all", "min_lists": 300,
                                              "holdout_lists": 600, "list_unit": "window"}}, origin="m.yaml")
    assert (m.evaluation.exclude_seen_days, m.evaluation.min_lists, m.evaluation.holdout_lists) == (None, 300, 600)
    assert m.to_dict()["evaluation"] == {"exclude_seen": "all", "min_lists": 300, "holdout_lists": 600,
                                         "list_unit": "window"}
    assert m.evaluation.eval_settings() == {"exclude_days": None, "min_lists": 300, "list_unit": "window"}
    assert parse_mapping(base, origin="m.yaml").evaluation.list_unit == "day"
    with pytest.raises(MappingError, match=r"evaluation.list_unit: expected one of day\|window .*got 'user'"):
        parse_mapping({**base, "evaluation": {"list_unit": "user"}}, origin="m.yaml")
    assert parse_mapping({**base, "evaluation": {"exclude_seen": 0}}, origin="m.yaml").evaluation.exclude_seen_days == 0
    with pytest.raises(MappingError) as err:
        parse_mapping({**base, "evaluation": {"exclude_seen": "weekly", "min_list": 5}}, origin="m.yaml")
    text = str(err.value)
    assert "evaluation: unknown key 'min_list' (did you mean 'min_lists'?)" in text
    assert "evaluation.exclude_seen: expected `all` (never re-recommend what a user took) or a number " \
           "of days >= 0, got 'weekly'" in text
    with pytest.raises(MappingError, match=r"evaluation.min_lists: expected an integer >= 1 .*got 0"):
        parse_mapping({**base, "evaluation": {"min_lists": 0}}, origin="m.yaml")
    with pytest.raises(MappingError, match=r"evaluation.holdout_lists: expected an integer >= 1 .*got '500'"):
        parse_mapping({**base, "evaluation": {"holdout_lists": "500"}}, origin="m.yaml")


def test_a_mapping_checked_from_a_dict_lists_every_problem_without_lines():
    data = changed(lambda d: d["interactions"].update(user=None, item=["x"]))
    with pytest.raises(MappingError) as err:
        parse_mapping(data, origin="inline", environ={})
    text = str(err.value)
    assert text.startswith("inline: 2 problems in the mapping file")
    assert "  - interactions.user: missing required field (the user id column)\n" in text
    assert "  - interactions.item: expected a column name, got a list (['x'])" in text
    assert "(line" not in text


def _options():
    """Every option the validator accepts, as a dotted path (lakehouse.mapped.mapping.FIELDS)."""
    from lakehouse.mapped.mapping import FIELDS

    return [(section, key) for section, (required, optional) in FIELDS.items() for key in required + optional]


def test_every_option_is_documented_in_the_byod_page_and_the_example_mapping():
    byod = (ROOT / "docs" / "byod.md").read_text()
    table = byod[byod.index("| field |"):byod.index("A mistake in the mapping")]
    missing = [path for path in (f"{s}.{k}" if s else k for s, k in _options()) if f"`{path}" not in table]
    assert not missing, f"not in docs/byod.md's mapping table: {missing}"

    example = EXAMPLE.read_text()
    blocks: dict[str, str] = {}  # top-level key -> its lines (with the comments)
    current = ""
    for line in example.splitlines():
        top = re.match(r"^#?\s?([a-z_]+):", line)
        if top and not line.startswith(" "):
            current = top.group(1)
        blocks[current] = blocks.get(current, "") + line + "\n"
    undocumented = []
    for section, key in _options():
        text = blocks.get(section.split(".")[0], "") if section else example
        if not re.search(rf"^\s*#?\s*{key}:", text, re.MULTILINE):
            undocumented.append(f"{section}.{key}" if section else key)
    assert not undocumented, f"not in {EXAMPLE.name} (as a key or a commented key): {undocumented}"
