"""The scenario schema itself: defaults, checks, frozenness, hashes and the JSON schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ivsim.config.schema import (
    AtStart,
    LinkLevelProfile,
    NodeSampler,
    Scenario,
    SceneRule,
    SystemLevelProfile,
    Uniform,
    profile_hash,
)

from .conftest import SCENARIO_YAML

BASE: dict[str, Any] = yaml.safe_load(SCENARIO_YAML)


def data(**changes: Any) -> dict[str, Any]:
    """A deep copy of the fixture scenario's data with top-level fields replaced."""
    result = copy.deepcopy(BASE)
    result.update(changes)
    return result


def errors(raw: dict[str, Any], **kwargs: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        Scenario.model_validate(raw, **kwargs)
    return [(e["loc"], e["type"]) for e in info.value.errors()]


@pytest.fixture
def scenario() -> Scenario:
    return Scenario.model_validate(data(), context={"base_dir": Path("/scen")})


def test_defaults_filled(scenario: Scenario) -> None:
    assert scenario.device == "auto"
    assert scenario.cloud.gpus == 1
    assert scenario.cloud.backhaul.rate_bps == 10e9
    assert scenario.radio.interference_load == "auto"
    assert scenario.radio.handover.hysteresis_db == 3.0
    assert scenario.traffic.frame_bits == 200_000
    assert scenario.link.fidelity == "analytic"
    assert scenario.output.root is None
    assert scenario.base_stations[0].subcarrier_spacing_hz == 30e3
    assert scenario.vehicles[0].via == []
    assert scenario.fleets[0].origins.kind == "any"
    without_departures = data(fleets=[{"id": "f", "count": 1}])
    assert Scenario.model_validate(without_departures).fleets[0].departures == AtStart(kind="at_start")


def test_unions_pick_the_right_member(scenario: Scenario) -> None:
    assert type(scenario.profiles["umi_los"]) is SystemLevelProfile
    assert type(scenario.profiles["cdl_nlos"]) is LinkLevelProfile
    assert scenario.vehicles[0].destination.node == 12345
    assert scenario.base_stations[1].position.x_m == 100.0
    assert scenario.profile_of("street") is scenario.profiles["umi_los"]


def test_frozen(scenario: Scenario) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        scenario.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        scenario.traffic.fps = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        scenario.vehicles[0].speed_factor = 2  # type: ignore[misc]


def test_small_parts_are_hashable(scenario: Scenario) -> None:
    assert hash(scenario.traffic) == hash(Scenario.model_validate(data()).traffic)
    assert len({scenario.radio, scenario.radio.model_copy()}) == 1


def test_scenario_hash_stable_and_sensitive(scenario: Scenario) -> None:
    again = Scenario.model_validate(data(), context={"base_dir": Path("/scen")})
    digest = scenario.scenario_hash()
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert again.scenario_hash() == digest
    assert Scenario.model_validate(data(seed=8), context={"base_dir": Path("/scen")}).scenario_hash() != digest
    assert Scenario.model_validate(data(), context={"base_dir": Path("/other")}).scenario_hash() != digest


def test_profile_hash_ignores_note() -> None:
    a = SystemLevelProfile(model="umi", los=True)
    b = SystemLevelProfile(model="umi", los=True, note="from a paper")
    c = SystemLevelProfile(model="umi", los=False)
    assert profile_hash(a) == profile_hash(b) != profile_hash(c)
    assert len(profile_hash(a)) == 12


def test_pathloss_of_system_level_profile() -> None:
    profile = SystemLevelProfile(model="uma", los=False)
    assert (profile.pathloss.model, profile.pathloss.los) == ("uma", False)


def test_json_schema() -> None:
    schema = Scenario.model_json_schema()
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(Scenario.model_fields)
    assert {"name", "duration_s", "map", "profiles", "scenes", "scene_rules", "base_stations"} <= set(
        schema["required"]
    )
    assert "LinkLevelProfile" in schema["$defs"]
    assert json.loads(json.dumps(schema)) == schema
    assert "source" in schema["$defs"]["MapSpec"]["properties"]


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("source", "base", "expected"),
    [
        ("maps/x.osm", Path("/scen"), "/scen/maps/x.osm"),
        ("maps/x.osm", None, "maps/x.osm"),
        ("/abs/x.osm.pbf", Path("/scen"), "/abs/x.osm.pbf"),
        ("builtin:helsinki", Path("/scen"), "builtin:helsinki"),
    ],
)
def test_map_source_resolution(source: str, base: Path | None, expected: str) -> None:
    raw = data(map={"source": source})
    assert Scenario.model_validate(raw, context={"base_dir": base}).map.source == expected


def test_map_source_home_expanded() -> None:
    raw = data(map={"source": "~/maps/x.osm"})
    assert Scenario.model_validate(raw, context={"base_dir": Path("/scen")}).map.source == str(
        Path("~/maps/x.osm").expanduser()
    )


def test_no_context_leaves_paths() -> None:
    assert Scenario.model_validate(data()).map.source == "maps/demo.osm"


# --------------------------------------------------------------------------- checks


def test_unknown_key_forbidden() -> None:
    assert errors(data(duraton_s=1)) == [(("duraton_s",), "extra_forbidden")]


def test_cross_references() -> None:
    raw = data()
    raw["scenes"]["street"]["profile"] = "nope"
    raw["scene_rules"]["default"] = "road"
    raw["scene_rules"]["rules"][1]["scene"] = "road"
    raw["base_stations"][1]["id"] = "bs0"
    assert errors(raw) == [
        (("scenes", "street", "profile"), "unknown_profile"),
        (("scene_rules", "default"), "unknown_scene"),
        (("scene_rules", "rules", 1, "scene"), "unknown_scene"),
        (("base_stations", 1, "id"), "duplicate_id"),
    ]


def test_needs_vehicles_or_fleets() -> None:
    assert errors(data(vehicles=[], fleets=[])) == [(("vehicles",), "no_vehicles")]
    assert Scenario.model_validate(data(vehicles=[])).fleets
    assert Scenario.model_validate(data(fleets=[])).vehicles


def test_empty_collections_refused() -> None:
    assert errors(data(base_stations=[])) == [(("base_stations",), "too_short")]
    assert errors(data(profiles={})) == [(("profiles",), "too_short")]


def test_k_factor_only_for_los_variants() -> None:
    pathloss = {"model": "umi", "los": True}
    LinkLevelProfile(model="cdl", variant="D", delay_spread_s=1e-7, k_factor_db=9, pathloss=pathloss)
    with pytest.raises(ValidationError, match="k_factor_db applies to variants D and E only"):
        LinkLevelProfile(model="cdl", variant="A", delay_spread_s=1e-7, k_factor_db=9, pathloss=pathloss)


def test_scene_rule_needs_a_condition() -> None:
    with pytest.raises(ValidationError, match="a rule needs `tags`, `polygon` or both"):
        SceneRule(scene="s")
    SceneRule(scene="s", polygon=[(0, 0), (1, 0), (0, 1)])
    with pytest.raises(ValidationError, match="at least 3"):
        SceneRule(scene="s", polygon=[(0, 0), (1, 0)])


def test_node_sampler_kinds() -> None:
    assert NodeSampler().kind == "any"
    with pytest.raises(ValidationError, match="kind 'polygon' needs `polygon`"):
        NodeSampler(kind="polygon")
    with pytest.raises(ValidationError, match="kind 'nodes' needs `nodes`"):
        NodeSampler(kind="nodes")
    assert NodeSampler(kind="nodes", nodes=[1, 2]).nodes == [1, 2]


def test_uniform_departures_ordered() -> None:
    assert Uniform(kind="uniform", start_s=1, end_s=2).end_s == 2
    with pytest.raises(ValidationError, match="end_s must not be before start_s"):
        Uniform(kind="uniform", start_s=3, end_s=2)


def test_scene_speed_range_ordered() -> None:
    raw = data()
    raw["scenes"]["street"]["speed_mps"] = [20, 10]
    assert errors(raw) == [(("scenes", "street"), "value_error")]


@pytest.mark.parametrize(
    ("field", "value"),
    [("duration_s", 0), ("duration_s", -1), ("seed", -1), ("name", ""), ("name", "has space"), ("device", "tpu")],
)
def test_top_level_constraints(field: str, value: Any) -> None:
    assert [loc for loc, _ in errors(data(**{field: value}))] == [(field,)]


def test_carrier_range() -> None:
    raw = data()
    raw["base_stations"][0]["carrier_hz"] = 200e9
    assert errors(raw) == [(("base_stations", 0, "carrier_hz"), "less_than_equal")]
