"""The scenario loader: every bad input gives one exact line each, with file:line, field path and allowed values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivsim.config import Scenario, apply_overrides, load_scenario, scenario_to_yaml
from ivsim.config.loader import load_scenario_text
from ivsim.errors import ScenarioError

from .conftest import SCENARIO_YAML

NAME = "demo.yaml"
TOP_FIELDS = (
    "name, seed, duration_s, device, map, profiles, scenes, scene_rules, base_stations, cloud, radio, "
    "vehicles, fleets, traffic, link, refinement, output"
)
VEHICLE_FIELDS = "id, origin, destination, via, depart_s, speed_factor"


def edit(*pairs: tuple[str, str], text: str = SCENARIO_YAML) -> str:
    """Replace each ``old`` (which must occur exactly once) by ``new``."""
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def problems(text: str, **kwargs: object) -> list[str]:
    """The problems ``load_scenario_text`` reports (it must report some)."""
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, name=NAME, **kwargs)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# --------------------------------------------------------------------------- a good file


def test_valid_scenario_loads(scenario_file: Path) -> None:
    scenario = load_scenario(scenario_file)
    assert isinstance(scenario, Scenario)
    assert scenario.name == "demo"
    assert scenario.seed == 7
    assert scenario.vehicles[0].speed_factor == 1.1
    assert scenario.fleets[0].departures.kind == "poisson"
    assert scenario.link.direction == "uplink"
    assert scenario.profile_of("tunnel").model == "cdl"


def test_path_given_as_str(scenario_file: Path) -> None:
    assert load_scenario(str(scenario_file)) == load_scenario(scenario_file)


def test_relative_map_path_resolved_against_yaml_folder(scenario_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    scenario = load_scenario(Path("scen") / "demo.yaml")
    assert scenario.map.source == str(tmp_path / "scen" / "maps" / "demo.osm")


def test_relative_output_root_resolved_against_yaml_folder(scenario_file: Path) -> None:
    scenario_file.write_text(SCENARIO_YAML + "output: {root: runs}\n")
    assert load_scenario(scenario_file).output.root == str(scenario_file.parent / "runs")


def test_absolute_map_path_kept(scenario_file: Path, tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "city.osm.pbf"
    scenario_file.write_text(edit(("source: maps/demo.osm ", f"source: {absolute}")))
    assert load_scenario(scenario_file).map.source == str(absolute)


def test_builtin_map_untouched(scenario_file: Path) -> None:
    scenario_file.write_text(edit(("source: maps/demo.osm ", "source: builtin:helsinki")))
    assert load_scenario(scenario_file).map.source == "builtin:helsinki"


def test_text_without_base_dir_leaves_relative_paths() -> None:
    assert load_scenario_text(SCENARIO_YAML).map.source == "maps/demo.osm"
    assert load_scenario_text(SCENARIO_YAML, base_dir="/data").map.source == "/data/maps/demo.osm"


def test_seed_argument_overrides_file_and_set(scenario_file: Path) -> None:
    assert load_scenario(scenario_file, seed=42).seed == 42
    assert load_scenario(scenario_file, overrides=["seed=5"], seed=42).seed == 42
    assert load_scenario(scenario_file, overrides=["seed=5"]).seed == 5
    assert load_scenario(scenario_file, seed=0).seed == 0


def test_scenario_to_yaml_round_trip(scenario_file: Path, tmp_path: Path) -> None:
    scenario = load_scenario(scenario_file)
    text = scenario_to_yaml(scenario)
    data = yaml.safe_load(text)
    assert data["cloud"] == {
        "id": "cloud",
        "gpus": 1,
        "backhaul": {"rate_bps": 10e9, "latency_s": 0.005},
        "queue": "fifo",
        "coalesce": True,
        "admission": "none",
    }
    assert list(data)[:3] == ["name", "seed", "duration_s"]  # field order, not sorted
    copy = tmp_path / "other" / "resolved.yaml"
    copy.parent.mkdir()
    copy.write_text(text)
    again = load_scenario(copy)
    assert again == scenario
    assert again.scenario_hash() == scenario.scenario_hash()
    assert scenario_to_yaml(again) == text


def test_round_trip_with_every_optional_part(tmp_path: Path) -> None:
    extra = """\
radio: {interference_load: 0.5, handover: {hysteresis_db: 2}}
output: {root: /tmp/runs, flush_rows: 10}
cloud: {gpus: 2}
"""
    text = edit(
        ("    speed_factor: 1.1 ", "    via: [{node: 5}, {lon: 1.0, lat: 2.0}]\n    speed_factor: 1.1 "),
        ("{kind: poisson, rate_per_s: 0.5}", "{kind: uniform, end_s: 30}\n    speed_factor: [0.8, 1.2]"),
        (
            "    position: {x_m: 100.0, y_m: -50.0}",
            "    position: {x_m: 100.0, y_m: -50.0}\n    backhaul: {rate_bps: 1e9}",
        ),
    )
    scenario = load_scenario_text(text + extra, base_dir=tmp_path)
    assert load_scenario_text(scenario_to_yaml(scenario)) == scenario


def test_scenario_hash_stable_across_loads(scenario_file: Path) -> None:
    first = load_scenario(scenario_file).scenario_hash()
    assert load_scenario(scenario_file).scenario_hash() == first
    assert load_scenario(scenario_file, seed=8).scenario_hash() != first


def test_yaml_anchors_and_merge_keys() -> None:
    text = edit(
        (
            "  - id: car0 ",
            "  - &car\n    id: car0 ",
        ),
        ("fleets:  ", "  - <<: *car\n    id: car1\nfleets:"),
    )
    scenario = load_scenario_text(text)
    assert [v.id for v in scenario.vehicles] == ["car0", "car1"]
    assert scenario.vehicles[1].speed_factor == 1.1


# --------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: no such file"
    assert info.value.problems == [f"{path}: no such file"]


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"^.*: is a directory, not a scenario file$") as info:
        load_scenario(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a scenario file"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(scenario_file: Path) -> None:
    scenario_file.chmod(0)
    try:
        with pytest.raises(ScenarioError) as info:
            load_scenario(scenario_file)
    finally:
        scenario_file.chmod(0o644)
    assert str(info.value) == f"{scenario_file}: cannot read the file: permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: d\xe9mo\n".encode("latin-1"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: not a UTF-8 text file (byte 7: invalid continuation byte)"


def test_file_name_as_given(scenario_file: Path, monkeypatch) -> None:
    monkeypatch.chdir(scenario_file.parent)
    scenario_file.write_text(edit(("duration_s: 60 ", "duration_s: 0  ")))
    with pytest.raises(ScenarioError) as info:
        load_scenario("demo.yaml")
    assert str(info.value) == "demo.yaml:3: duration_s: Input should be greater than 0 (got 0)"


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n"])
def test_empty_file(text: str) -> None:
    assert problems(text) == [
        "demo.yaml: the file is empty (expected a mapping of fields: name, seed, duration_s, ...)"
    ]


def test_yaml_syntax_error() -> None:
    text = edit(("    los: true ", "    los: true: false"))
    assert problems(text) == ["demo.yaml:9: YAML syntax error: mapping values are not allowed here (column 14)"]


def test_yaml_syntax_error_unclosed_bracket() -> None:
    text = edit(("tags: {tunnel: true}", "tags: {tunnel: true "))
    assert problems(text) == [
        (
            "demo.yaml:27: YAML syntax error: expected ',' or '}', but got '-' "
            "(column 5, while parsing a flow mapping at line 26)"
        )
    ]


def test_yaml_tab_indent() -> None:
    assert problems("name: x\n\t- y\n") == [
        "demo.yaml:2: YAML syntax error: found character '\\t' that cannot start any token (column 1)"
    ]


def test_yaml_unsafe_tag_refused() -> None:
    assert problems("name: !!python/object/apply:os.system [ls]\n") == [
        (
            "demo.yaml:1: YAML syntax error: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system' (column 7)"
        )
    ]


def test_yaml_two_documents() -> None:
    assert problems(SCENARIO_YAML + "---\nname: other\n") == [
        (
            "demo.yaml:48: YAML syntax error: but found another document "
            "(column 1, expected a single document in the stream at line 1)"
        )
    ]


@pytest.mark.parametrize(
    ("text", "kind", "line"),
    [("- name: demo\n- seed: 1\n", "a list", 1), ("just a string\n", "a string", 1), ("# c\n42\n", "a number", 2)],
)
def test_top_level_not_a_mapping(text: str, kind: str, line: int) -> None:
    assert problems(text) == [
        f"demo.yaml:{line}: the top level must be a mapping of fields (name, seed, duration_s, ...), got {kind}"
    ]


def test_duplicate_key() -> None:
    text = edit(("  fps: 10 ", "  fps: 10\n  fps: 12"))
    assert problems(text) == ["demo.yaml:45: traffic.fps: duplicate key (first at line 44)"]


# --------------------------------------------------------------------------- field errors


def test_unknown_key_top_level_with_suggestion() -> None:
    text = edit(("duration_s: 60 ", "duraton_s: 60  "))
    # one mistake, one line: the 'required field missing' of the misspelt field is not repeated
    assert problems(text) == [
        f"demo.yaml:3: duraton_s: unknown key 'duraton_s', did you mean 'duration_s'? (allowed: {TOP_FIELDS})",
    ]


def test_missing_field_kept_when_the_unknown_key_is_not_its_misspelling() -> None:
    text = edit(("duration_s: 60 ", "zzzzzzzzzz: 60 "))
    assert problems(text)[0] == "demo.yaml:1: duration_s: required field missing"


def test_unknown_key_nested_with_suggestion() -> None:
    text = edit(("    speed_factor: 1.1 ", "    sped_factor: 1.1  "))
    assert problems(text) == [
        (
            "demo.yaml:38: vehicles.0.sped_factor: unknown key 'sped_factor', did you mean 'speed_factor'? "
            f"(allowed: {VEHICLE_FIELDS})"
        )
    ]


def test_unknown_key_in_discriminated_union_member() -> None:
    text = edit(("    los: true ", "    lso: true "))
    assert problems(text) == [
        (
            "demo.yaml:9: profiles.umi_los.lso: unknown key 'lso', did you mean 'los'? "
            "(allowed: model, los, extra_loss_db, shadow_fading_db, shadow_decorrelation_m, note)"
        ),
    ]


def test_unknown_key_without_suggestion() -> None:
    text = edit(("  deadline_s: 0.1 ", "  zzz: 0.1 "))
    assert problems(text) == ["demo.yaml:45: traffic.zzz: unknown key 'zzz' (allowed: fps, frame_bits, deadline_s)"]


def test_missing_required_field_points_at_parent_mapping() -> None:
    text = edit(("    destination: {node: 12345} ", "    depart_s: 1 "))
    assert problems(text) == ["demo.yaml:35: vehicles.0.destination: required field missing"]


def test_wrong_type_number() -> None:
    text = edit(("duration_s: 60 ", "duration_s: abc"))
    assert problems(text) == [
        "demo.yaml:3: duration_s: Input should be a valid number, unable to parse string as a number (got 'abc')"
    ]


def test_wrong_type_mapping_expected() -> None:
    text = edit(("map:  ", "map: builtin:helsinki\nmapx:"))
    assert problems(text) == [
        (
            "demo.yaml:4: map: expected a mapping of fields (source, fallback_speed_kph, speeds_kph), "
            "got a string ('builtin:helsinki')"
        ),
        f"demo.yaml:5: mapx: unknown key 'mapx', did you mean 'map'? (allowed: {TOP_FIELDS})",
    ]


def test_wrong_type_null_and_list() -> None:
    text = edit(("name: demo ", "name: null "), ("  fps: 10 ", "  fps: [10]"))
    assert problems(text) == [
        "demo.yaml:1: name: Input should be a valid string (got null)",
        "demo.yaml:44: traffic.fps: Input should be a valid number",
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "rule"),
    [
        ("duration_s: 60 ", "duration_s: {}", 3, "duration_s", "greater than 0"),
        ("  fps: 10 ", "  fps: {}", 44, "traffic.fps", "greater than 0"),
        ("    count: 3 ", "    count: {}", 41, "fleets.0.count", "greater than or equal to 1"),
        ("  deadline_s: 0.1 ", "  deadline_s: {}", 45, "traffic.deadline_s", "greater than 0"),
    ],
)
@pytest.mark.parametrize("value", ["0", "-1", "-0.5"])
def test_non_positive_numbers(old: str, new: str, line: int, path: str, rule: str, value: str) -> None:
    got = problems(edit((old, new.format(value))))
    if path == "fleets.0.count" and value == "-0.5":
        expected = f"demo.yaml:{line}: {path}: Input should be a valid integer, got a number with a fractional part"
        assert got == [f"{expected} (got -0.5)"]
    else:
        assert got == [f"demo.yaml:{line}: {path}: Input should be {rule} (got {value})"]


def test_unknown_scene_in_rule() -> None:
    text = edit(("    - scene: street ", "    - scene: stret  "))
    assert problems(text) == [
        "demo.yaml:27: scene_rules.rules.1.scene: unknown scene 'stret' (allowed: street, tunnel)"
    ]


def test_unknown_default_scene() -> None:
    text = edit(("  default: street ", "  default: road   "))
    assert problems(text) == ["demo.yaml:23: scene_rules.default: unknown scene 'road' (allowed: street, tunnel)"]


def test_unknown_profile_in_scene() -> None:
    text = edit(("    profile: cdl_nlos ", "    profile: cdl_los  "))
    assert problems(text) == [
        "demo.yaml:20: scenes.tunnel.profile: unknown profile 'cdl_los' (allowed: umi_los, cdl_nlos)"
    ]


def test_no_base_stations() -> None:
    block = "\n".join(SCENARIO_YAML.splitlines()[28:33]) + "\n"
    text = edit((block, "base_stations: []\n#\n#\n#\n#\n"))
    assert problems(text) == ["demo.yaml:29: base_stations: List should have at least 1 item after validation, not 0"]


def test_literal_wrong_value() -> None:
    text = edit(("  direction: uplink ", "  direction: sideways"))
    assert problems(text) == ["demo.yaml:47: link.direction: unknown value 'sideways' (allowed: downlink, uplink)"]


def test_literal_numbers() -> None:
    text = edit(("  - id: bs1 ", "  - id: bs1\n    subcarrier_spacing_hz: 7"))
    assert problems(text) == [
        (
            "demo.yaml:33: base_stations.1.subcarrier_spacing_hz: unknown value 7 "
            "(allowed: 15000.0, 30000.0, 60000.0, 120000.0)"
        )
    ]


def test_unknown_discriminator_value() -> None:
    text = edit(("    model: cdl ", "    model: xdl "))
    assert problems(text) == [
        "demo.yaml:11: profiles.cdl_nlos.model: unknown value 'xdl' (allowed: umi, uma, rma, cdl, tdl)"
    ]


def test_missing_discriminator() -> None:
    text = edit(("{kind: poisson, rate_per_s: 0.5}", "{rate_per_s: 0.5}"))
    assert problems(text) == [
        "demo.yaml:42: fleets.0.departures.kind: required field missing (allowed: at_start, poisson, uniform)"
    ]


def test_discriminated_union_given_a_scalar() -> None:
    text = edit(("{kind: poisson, rate_per_s: 0.5}", "poisson"))
    assert problems(text) == [
        (
            "demo.yaml:42: fleets.0.departures: expected a mapping with a 'kind' field "
            "(allowed: at_start, poisson, uniform), got a string ('poisson')"
        )
    ]


def test_error_inside_discriminated_member_has_no_tag_in_path() -> None:
    text = edit(("{kind: poisson, rate_per_s: 0.5}", "{kind: poisson, rate_per_s: 0}"))
    assert problems(text) == ["demo.yaml:42: fleets.0.departures.rate_per_s: Input should be greater than 0 (got 0)"]


def test_model_validator_error() -> None:
    text = edit(("speed_mps: [5, 25]", "speed_mps: [25, 5]"))
    assert problems(text) == ["demo.yaml:19: scenes.tunnel: speed_mps must be [min, max] with min <= max"]


def test_duplicate_base_station_id() -> None:
    text = edit(("  - id: bs1 ", "  - id: bs0 "))
    assert problems(text) == ["demo.yaml:32: base_stations.1.id: duplicate id 'bs0'"]


def test_invalid_name_key() -> None:
    text = edit(("  umi_los:  ", "  umi los:  "), ("    profile: umi_los ", "    profile: cdl_nlos"))
    assert problems(text) == [
        "demo.yaml:7: profiles.umi los: invalid key: String should match pattern '^[A-Za-z0-9_.\\-]+$' (got 'umi los')"
    ]


# --------------------------------------------------------------------------- unions


def test_union_matches_no_member() -> None:
    text = edit(("origin: {lon: 24.93, lat: 60.16}", "origin: {lon: 24.93, node: 6}"))
    assert problems(text) == ["demo.yaml:36: vehicles.0.origin: expected {lon, lat} or {node} (got keys [lon, node])"]


def test_union_scalar_input() -> None:
    text = edit(("position: {x_m: 100.0, y_m: -50.0}", "position: 5"))
    assert problems(text) == ["demo.yaml:33: base_stations.1.position: expected {lon, lat} or {x_m, y_m} (got 5)"]


def test_union_real_error_of_the_intended_member() -> None:
    text = edit(("origin: {lon: 24.93, lat: 60.16}", "origin: {lon: 240, lat: 60.16} "))
    assert problems(text) == [
        "demo.yaml:36: vehicles.0.origin.lon: Input should be less than or equal to 180 (got 240)"
    ]


def test_union_member_chosen_by_keys() -> None:
    text = edit(
        ("origin: {lon: 24.93, lat: 60.16}", "origin: {lon: 24.93}           "),
        ("position: {x_m: 100.0, y_m: -50.0}", "position: {x_m: abc, y_m: -50.0} "),
    )
    assert problems(text) == [
        (
            "demo.yaml:33: base_stations.1.position.x_m: Input should be a valid number, unable to parse string as a number "
            "(got 'abc')"
        ),
        "demo.yaml:36: vehicles.0.origin.lat: required field missing",
    ]


def test_union_in_list_item() -> None:
    text = edit(("    speed_factor: 1.1 ", "    via: [{node: 1}, {node: x}, 3]"))
    assert problems(text) == [
        (
            "demo.yaml:38: vehicles.0.via.1.node: Input should be a valid integer, unable to parse string as an integer "
            "(got 'x')"
        ),
        "demo.yaml:38: vehicles.0.via.2: expected {lon, lat} or {node} (got 3)",
    ]


def test_union_of_scalars() -> None:
    text = SCENARIO_YAML + "radio:\n  interference_load: lots\n  measurement_period_s: 0\n"
    assert problems(text) == [
        "demo.yaml:49: radio.interference_load: expected 'auto' or a number >= 0 and <= 1 (got 'lots')",
        "demo.yaml:50: radio.measurement_period_s: Input should be greater than 0 (got 0)",
    ]
    assert problems(SCENARIO_YAML + "radio: {interference_load: 1.5}\n") == [
        "demo.yaml:48: radio.interference_load: Input should be less than or equal to 1 (got 1.5)"
    ]


def test_union_of_tag_values() -> None:
    text = edit(("{highway: [primary, secondary]}", "{highway: {a: 1}}"))
    assert problems(text) == [
        "demo.yaml:28: scene_rules.rules.1.tags.highway: expected a string, true or false or a list (got keys [a])"
    ]


# --------------------------------------------------------------------------- many at once


def test_several_errors_at_once_each_with_its_line() -> None:
    text = edit(
        ("seed: 7 ", "seed: x "),
        ("duration_s: 60 ", "duration_s: -1 "),
        ("    profile: cdl_nlos ", "    profile: cdl_los  "),
        ("    - scene: street ", "    - scene: stret  "),
        ("  - id: bs1 ", "  - id: bs0 "),
        ("    speed_factor: 1.1 ", "    sped_factor: 1.1  "),
        ("    count: 3 ", "    count: 0 "),
        ("  fps: 10 ", "  fps: 0  "),
        ("  deadline_s: 0.1 ", "  deadline_s: 0   "),
        ("  direction: uplink ", "  direction: sideways"),
    )
    assert problems(text) == [
        "demo.yaml:2: seed: Input should be a valid integer, unable to parse string as an integer (got 'x')",
        "demo.yaml:3: duration_s: Input should be greater than 0 (got -1)",
        "demo.yaml:20: scenes.tunnel.profile: unknown profile 'cdl_los' (allowed: umi_los, cdl_nlos)",
        "demo.yaml:27: scene_rules.rules.1.scene: unknown scene 'stret' (allowed: street, tunnel)",
        "demo.yaml:32: base_stations.1.id: duplicate id 'bs0'",
        (
            "demo.yaml:38: vehicles.0.sped_factor: unknown key 'sped_factor', did you mean 'speed_factor'? "
            f"(allowed: {VEHICLE_FIELDS})"
        ),
        "demo.yaml:41: fleets.0.count: Input should be greater than or equal to 1 (got 0)",
        "demo.yaml:44: traffic.fps: Input should be greater than 0 (got 0)",
        "demo.yaml:45: traffic.deadline_s: Input should be greater than 0 (got 0)",
        "demo.yaml:47: link.direction: unknown value 'sideways' (allowed: downlink, uplink)",
    ]


def test_no_pydantic_urls_or_class_names() -> None:
    text = edit(
        ("origin: {lon: 24.93, lat: 60.16}", "origin: {lon: 24.93, node: 6}"),
        ("{kind: poisson, rate_per_s: 0.5}", "{kind: poisson, rate_per_s: -1}"),
    )
    message = "\n".join(problems(text))
    for word in ("errors.pydantic.dev", "LonLat", "NodeRef", "poisson.", "For further information"):
        assert word not in message


# --------------------------------------------------------------------------- --set


def test_set_nested_list_item() -> None:
    scenario = load_scenario_text(
        SCENARIO_YAML, overrides=["vehicles.0.speed_factor=1.2", "base_stations.1.height_m=30"]
    )
    assert scenario.vehicles[0].speed_factor == 1.2
    assert scenario.base_stations[1].height_m == 30


def test_set_values_are_yaml() -> None:
    scenario = load_scenario_text(
        SCENARIO_YAML,
        overrides=[
            "profiles.umi_los.los=no",
            "scene_rules.rules.0.tags={tunnel: true, layer: '-1'}",
            "vehicles.0.origin={node: 99}",
            "name=other",
        ],
    )
    assert scenario.profiles["umi_los"].los is False
    assert scenario.scene_rules.rules[0].tags == {"tunnel": True, "layer": "-1"}
    assert scenario.vehicles[0].origin.node == 99
    assert scenario.name == "other"


def test_set_quoted_no_is_a_string() -> None:
    assert problems(SCENARIO_YAML, overrides=['link.direction="no"']) == [
        "demo.yaml: --set link.direction=\"no\": link.direction: unknown value 'no' (allowed: downlink, uplink)"
    ]


def test_set_bare_no_is_false() -> None:
    assert problems(SCENARIO_YAML, overrides=["link.direction=no"]) == [
        (
            "demo.yaml: --set link.direction=no: link.direction: unknown value false (allowed: downlink, uplink); "
            "YAML reads yes/no/on/off as true/false, quote the word to mean a string"
        )
    ]


def test_set_creates_missing_mappings() -> None:
    scenario = load_scenario_text(
        SCENARIO_YAML, overrides=["radio.handover.hysteresis_db=1.5", "base_stations.0.backhaul.rate_bps=1e9"]
    )
    assert scenario.radio.handover.hysteresis_db == 1.5
    assert scenario.base_stations[0].backhaul is not None
    assert scenario.base_stations[0].backhaul.rate_bps == 1e9


def test_set_later_wins() -> None:
    assert load_scenario_text(SCENARIO_YAML, overrides=["traffic.fps=1", "traffic.fps=2"]).traffic.fps == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("vehicles.0.speed_factor", "expected PATH=VALUE (e.g. vehicles.0.speed_factor=1.2)"),
        ("=1", "empty path before '=' (expected PATH=VALUE, e.g. vehicles.0.speed_factor=1.2)"),
        (
            "vehicles..speed_factor=1",
            "empty segment in path 'vehicles..speed_factor' (segments are separated by single dots)",
        ),
        ("vehicles.0.=1", "empty segment in path 'vehicles.0.' (segments are separated by single dots)"),
        ("vehicles.1.speed_factor=1", "index 1 is out of range: vehicles has 1 item"),
        ("base_stations.-1.id=x", "index -1 is out of range: base_stations has 2 items"),
        ("vehicles.first.id=x", "vehicles is a list, so 'first' must be an item number (0..0)"),
        ("name.first=x", "cannot go into name with 'first': it is a string ('demo'), not a mapping or a list"),
        ("traffic.fps.x=1", "cannot go into traffic.fps with 'x': it is a number (10), not a mapping or a list"),
        ("name=[1,", "the value is not valid YAML: expected the node content, but found '<stream end>'"),
        ("name={a: 1", "the value is not valid YAML: expected ',' or '}', but got '<stream end>'"),
    ],
)
def test_set_bad_override(override: str, message: str) -> None:
    assert problems(SCENARIO_YAML, overrides=[override]) == [f"demo.yaml: --set {override}: {message}"]
    with pytest.raises(ScenarioError) as info:
        apply_overrides(yaml.safe_load(SCENARIO_YAML), [override])
    assert info.value.problems == [f"--set {override}: {message}"]


def test_set_unknown_key() -> None:
    assert problems(SCENARIO_YAML, overrides=["vehicles.0.spede_factor=1.2"]) == [
        (
            "demo.yaml: --set vehicles.0.spede_factor=1.2: vehicles.0.spede_factor: unknown key 'spede_factor', "
            f"did you mean 'speed_factor'? (allowed: {VEHICLE_FIELDS})"
        )
    ]


def test_set_invalid_value() -> None:
    assert problems(SCENARIO_YAML, overrides=["vehicles.0.speed_factor=-1"]) == [
        "demo.yaml: --set vehicles.0.speed_factor=-1: vehicles.0.speed_factor: Input should be greater than 0 (got -1)"
    ]


def test_set_invalid_subtree() -> None:
    assert problems(
        SCENARIO_YAML, overrides=["scenes.street={profile: nope, speed_mps: [1, 2]}", "profiles.umi_los=5"]
    ) == [
        (
            "demo.yaml: --set profiles.umi_los=5: profiles.umi_los: expected a mapping with a 'model' field "
            "(allowed: umi, uma, rma, cdl, tdl), got a number (5)"
        ),
        (
            "demo.yaml: --set scenes.street={profile: nope, speed_mps: [1, 2]}: scenes.street.profile: "
            "unknown profile 'nope' (allowed: umi_los, cdl_nlos)"
        ),
    ]


def test_set_errors_together_with_file_errors() -> None:
    text = edit(("  fps: 10 ", "  fps: 0  "))
    assert problems(text, overrides=["vehicles.5.id=x", "link.direction=sideways"], seed=-1) == [
        "demo.yaml:44: traffic.fps: Input should be greater than 0 (got 0)",
        "demo.yaml: --set vehicles.5.id=x: index 5 is out of range: vehicles has 1 item",
        "demo.yaml: seed=-1: seed: Input should be greater than or equal to 0 (got -1)",
        (
            "demo.yaml: --set link.direction=sideways: link.direction: unknown value 'sideways' "
            "(allowed: downlink, uplink)"
        ),
    ]


def test_set_fixes_a_file_error() -> None:
    text = edit(("  fps: 10 ", "  fps: 0  "))
    assert load_scenario_text(text, overrides=["traffic.fps=5"]).traffic.fps == 5


def test_apply_overrides_does_not_mutate() -> None:
    data = yaml.safe_load(SCENARIO_YAML)
    before = yaml.safe_dump(data)
    result = apply_overrides(data, ["vehicles.0.speed_factor=2", "radio.handover.hysteresis_db=1", "new_key=[1, 2]"])
    assert yaml.safe_dump(data) == before
    assert result["vehicles"][0]["speed_factor"] == 2
    assert result["radio"] == {"handover": {"hysteresis_db": 1}}
    assert result["new_key"] == [1, 2]
    assert result is not data


def test_apply_overrides_reports_every_bad_override_and_source() -> None:
    with pytest.raises(ScenarioError) as info:
        apply_overrides({"a": [1]}, ["a.3=1", "b", "a.0=2"], source="-s")
    assert info.value.problems == [
        "-s a.3=1: index 3 is out of range: a has 1 item",
        "-s b: expected PATH=VALUE (e.g. vehicles.0.speed_factor=1.2)",
    ]


def test_apply_overrides_empty_list_and_int_keys() -> None:
    with pytest.raises(ScenarioError, match=r"^--set a.0=1: index 0 is out of range: a has no items$"):
        apply_overrides({"a": []}, ["a.0=1"])
    assert apply_overrides({"m": {1: "x"}}, ["m.1=y"]) == {"m": {1: "y"}}
    assert apply_overrides({}, ["x=a=b"]) == {"x": "a=b"}


# --------------------------------------------------------------------------- robustness

SEGMENTS = st.sampled_from(
    [
        "name",
        "seed",
        "vehicles",
        "fleets",
        "base_stations",
        "profiles",
        "scenes",
        "scene_rules",
        "rules",
        "map",
        "source",
        "origin",
        "lon",
        "node",
        "umi_los",
        "street",
        "speed_mps",
        "tags",
        "radio",
        "handover",
        "departures",
        "kind",
        "0",
        "1",
        "2",
        "-1",
        "99",
        "x",
        "",
        " ",
        "[key]",
        "é",
        "0x1",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "1",
            "-1",
            "0",
            "no",
            '"no"',
            "null",
            "",
            "[1, 2]",
            "{a: 1}",
            "[",
            "{",
            ": :",
            "*a",
            "!!binary x",
            "2001-01-01",
            "1e400",
            ".nan",
            "{node: 3}",
            "{lon: 1, lat: 2}",
            "&a [*a]",
        ]
    ),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paths=st.lists(st.lists(SEGMENTS, min_size=1, max_size=5), min_size=1, max_size=3), values=st.data())
def test_random_overrides_only_raise_scenario_error(paths: list[list[str]], values: st.DataObject) -> None:
    overrides = [".".join(path) + "=" + values.draw(VALUES) for path in paths]
    try:
        scenario = load_scenario_text(SCENARIO_YAML, name=NAME, overrides=overrides)
    except ScenarioError as exc:
        assert exc.problems
        assert all(line.startswith(f"{NAME}") and "\n" not in line for line in exc.problems)
    else:
        assert isinstance(scenario, Scenario)
    try:
        apply_overrides(yaml.safe_load(SCENARIO_YAML), overrides)
    except ScenarioError:
        pass


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab:- \n\t[]{},'\"#&*!|>01.x")), max_size=60))
def test_random_text_only_raises_scenario_error(text: str) -> None:
    try:
        load_scenario_text(text, name=NAME)
    except ScenarioError as exc:
        assert exc.problems
        assert all(line.startswith(NAME) for line in exc.problems)


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(
        st.tuples(st.integers(0, 46), st.text(alphabet=st.sampled_from(list("ab:- []{},'\"01.x")), max_size=6)),
        min_size=1,
        max_size=3,
    )
)
def test_random_line_damage_only_raises_scenario_error(cuts: list[tuple[int, str]]) -> None:
    lines = SCENARIO_YAML.splitlines()
    for index, tail in cuts:
        lines[index] = lines[index][: len(lines[index]) // 2] + tail
    try:
        load_scenario_text("\n".join(lines), name=NAME)
    except ScenarioError as exc:
        assert exc.problems
        assert all(line.startswith(f"{NAME}:") and "\n" not in line for line in exc.problems)
