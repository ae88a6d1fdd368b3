"""The shipped scenarios: every one loads, and the paper / tunnel scenarios say what they claim to.

``four_regions.yaml`` must carry the knowledge-map paper's four regions (delay spreads, LOS, carrier, speeds)
and its cars must cross them; ``midtown_tunnels.yaml`` must have tunnel edges on its map and cars whose
planned routes go through them. Routes are planned with the :class:`~ivsim.world.routes.Router` without
running the simulation; the analytic runs that count ``scene_enter`` rows are marked ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ivsim
from ivsim.config.schema import LinkLevelProfile, Scenario
from ivsim.world.maps import RoadMap, load_map
from ivsim.world.routes import Router
from ivsim.world.scenes import SceneMap

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SCENARIO_FILES = sorted(SCENARIOS.glob("*.yaml"))

# The paper's regions: (LOS, RMS delay spread range in s).
PAPER_REGIONS = {
    "region1": (True, (50e-9, 100e-9)),
    "region2": (False, (400e-9, 450e-9)),
    "region3": (False, (950e-9, 1000e-9)),
    "region4": (False, (50e-9, 100e-9)),
}
PAPER_CARRIER_HZ = 2.655e9
PAPER_SPEED_MPS = (12 / 3.6, 144 / 3.6)  # 12-144 km/h


def test_the_suite_has_the_new_scenarios() -> None:
    names = {p.stem for p in SCENARIO_FILES}
    assert {"four_regions", "midtown_tunnels", "helsinki", "nyc_brooklyn_bridge", "nyc_fleet"} <= names


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_every_scenario_loads(path: Path) -> None:
    sc = ivsim.load_scenario(path)
    assert isinstance(sc, Scenario)
    assert sc.name == path.stem
    for scene in sc.scenes.values():
        assert scene.profile in sc.profiles
    if not sc.map.source.startswith("builtin:"):
        assert Path(sc.map.source).is_file()


# --------------------------------------------------------------------------- four regions


@pytest.fixture(scope="module")
def four_regions() -> Scenario:
    return ivsim.load_scenario(SCENARIOS / "four_regions.yaml")


def _world(scenario: Scenario) -> tuple[RoadMap, Router, SceneMap]:
    """The scenario's road map, a router on it and its scene map."""
    roadmap = load_map(scenario.map)
    return roadmap, Router(roadmap), SceneMap(roadmap, scenario.scene_rules, tuple(scenario.scenes))


@pytest.fixture(scope="module")
def four_regions_world(four_regions: Scenario) -> tuple[RoadMap, Router, SceneMap]:
    return _world(four_regions)


def test_four_regions_profiles_match_the_paper(four_regions: Scenario) -> None:
    assert set(four_regions.scenes) == set(PAPER_REGIONS)
    for scene, (los, (lo, hi)) in PAPER_REGIONS.items():
        profile = four_regions.profile_of(scene)
        assert isinstance(profile, LinkLevelProfile), scene
        assert profile.model in ("tdl", "cdl")
        assert lo <= profile.delay_spread_s <= hi, scene
        assert profile.pathloss.model == "umi"
        assert profile.pathloss.los is los, scene
        # a LOS region needs a variant with a LOS path (D, E); an NLOS one a variant without (A, B, C)
        assert (profile.variant in ("D", "E")) is los, scene
        speed = four_regions.scenes[scene].speed_mps
        assert speed[0] == pytest.approx(PAPER_SPEED_MPS[0], abs=0.05)
        assert speed[1] == pytest.approx(PAPER_SPEED_MPS[1], abs=0.05)


def test_four_regions_carriers(four_regions: Scenario) -> None:
    assert four_regions.base_stations
    assert all(bs.carrier_hz == pytest.approx(PAPER_CARRIER_HZ) for bs in four_regions.base_stations)


def test_four_regions_tile_the_map(four_regions_world: tuple[RoadMap, Router, SceneMap]) -> None:
    _, _, scene_map = four_regions_world
    counts = scene_map.edge_counts()
    assert set(counts) == set(PAPER_REGIONS)
    assert all(counts[name] > 0 for name in PAPER_REGIONS), counts


def test_four_regions_routes_cross_regions(
    four_regions: Scenario, four_regions_world: tuple[RoadMap, Router, SceneMap]
) -> None:
    roadmap, router, scene_map = four_regions_world
    assert 3 <= len(four_regions.vehicles) <= 6
    driven: set[str] = set()
    for v in four_regions.vehicles:
        route = router.route(v.origin, v.destination, via=v.via)
        scenes = {scene_map.names[i] for i in np.unique(scene_map.route_scenes(route))}
        assert len(scenes) >= 2, f"{v.id} stays in {scenes}"
        driven |= scenes
        speed_kph = roadmap.speed_mps[route.edges] * v.speed_factor * 3.6
        assert speed_kph.min() >= 12 * 0.95 and speed_kph.max() <= 144 * 1.01, v.id
    assert driven == set(PAPER_REGIONS)


# --------------------------------------------------------------------------- midtown tunnels


@pytest.fixture(scope="module")
def midtown() -> Scenario:
    return ivsim.load_scenario(SCENARIOS / "midtown_tunnels.yaml")


@pytest.fixture(scope="module")
def midtown_world(midtown: Scenario) -> tuple[RoadMap, Router, SceneMap]:
    return _world(midtown)


def test_midtown_has_tunnel_edges(midtown_world: tuple[RoadMap, Router, SceneMap]) -> None:
    roadmap, _, scene_map = midtown_world
    counts = scene_map.edge_counts()
    assert counts["tunnel"] > 0
    tunnel = scene_map.scene_index("tunnel")
    names = {str(roadmap.edge_tags[i].get("name")) for i in np.flatnonzero(scene_map.edge_scene == tunnel)}
    assert {"Lincoln Tunnel", "Park Avenue Tunnel", "1st Avenue Tunnel"} <= names
    assert all(roadmap.edge_tags[i].get("tunnel") == "yes" for i in np.flatnonzero(scene_map.edge_scene == tunnel))


def test_midtown_tunnel_profile_is_link_level(midtown: Scenario) -> None:
    profile = midtown.profile_of("tunnel")
    assert isinstance(profile, LinkLevelProfile)
    assert profile.model == "tdl"
    assert profile.extra_loss_db > 0
    assert "assumption" in profile.note


def test_midtown_routes_go_through_tunnels(midtown: Scenario, midtown_world: tuple[RoadMap, Router, SceneMap]) -> None:
    roadmap, router, scene_map = midtown_world
    tunnel = scene_map.scene_index("tunnel")
    through: dict[str, set[str]] = {}
    for v in midtown.vehicles:
        route = router.route(v.origin, v.destination, via=v.via)
        edges = route.edges[scene_map.route_scenes(route) == tunnel]
        if len(edges):
            through[v.id] = {str(roadmap.edge_tags[i].get("name")) for i in edges}
    assert through, "no vehicle's planned route crosses a tunnel"
    crossed = set().union(*through.values())
    assert {"Lincoln Tunnel", "Park Avenue Tunnel", "1st Avenue Tunnel"} <= crossed, through


# --------------------------------------------------------------------------- short analytic runs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "must_enter"),
    [("four_regions", set(PAPER_REGIONS)), ("midtown_tunnels", {"tunnel", "waterfront_highway"})],
)
def test_analytic_run_enters_the_scenes(name: str, must_enter: set[str], tmp_path: Path) -> None:
    run_dir = tmp_path / name
    summary = ivsim.run_scenario(SCENARIOS / f"{name}.yaml", run_dir=run_dir, overrides=["link.fidelity=analytic"])
    assert summary.status == "complete"
    df = ivsim.load_run(run_dir)
    entered = df[df.event == "scene_enter"].groupby("scene").size()
    assert must_enter <= set(entered.index), entered.to_dict()
