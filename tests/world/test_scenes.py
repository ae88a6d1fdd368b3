"""Scene maps: ordered tag / polygon rules give every edge a scene."""

from __future__ import annotations

import numpy as np
import pytest

from ivsim.config.schema import SceneRule, SceneRules
from ivsim.world import RoadMap, SceneMap

NAMES = ("street", "bridge", "tunnel", "canyon")


def _scenes(roadmap: RoadMap, *rules: SceneRule, default: str = "street") -> SceneMap:
    return SceneMap(roadmap, SceneRules(default=default, rules=list(rules)), NAMES)


def _edges_with(scene_map: SceneMap, name: str) -> set[tuple[int, int]]:
    rm = scene_map.roadmap
    hit = np.flatnonzero(scene_map.edge_scene == scene_map.scene_index(name))
    return {(int(rm.edge_u[i]), int(rm.edge_v[i])) for i in hit}


def test_tag_value_and_presence(toy_map: RoadMap) -> None:
    sm = _scenes(
        toy_map,
        SceneRule(scene="bridge", tags={"bridge": "yes"}),
        SceneRule(scene="tunnel", tags={"tunnel": True}),
    )
    assert sm.names == NAMES
    assert sm.edge_scene.dtype == np.int16
    assert _edges_with(sm, "bridge") == {(1, 2), (2, 1)}
    assert _edges_with(sm, "tunnel") == {(5, 6), (6, 5)}
    assert sm.edge_counts() == {"street": toy_map.n_edges - 4, "bridge": 2, "tunnel": 2, "canyon": 0}
    lengths = sm.length_by_scene_m()
    assert lengths["bridge"] == pytest.approx(200.0)
    assert sum(lengths.values()) == pytest.approx(float(toy_map.polyline_m.sum()))
    assert sm.scene_of(toy_map.edge_index[(1, 2, 0)]) == "bridge"
    assert sm.scene_of(toy_map.edge_index[(1, 4, 0)]) == "street"


def test_value_is_case_sensitive_and_exact(toy_map: RoadMap) -> None:
    sm = _scenes(toy_map, SceneRule(scene="bridge", tags={"bridge": "Yes"}))
    assert sm.edge_counts()["bridge"] == 0


def test_list_of_values_and_list_valued_tags(toy_map: RoadMap) -> None:
    sm = _scenes(toy_map, SceneRule(scene="canyon", tags={"highway": ["tertiary", "primary"]}))
    assert _edges_with(sm, "canyon") == {(8, 9), (9, 8)}  # highway=['residential', 'tertiary']
    sm = _scenes(toy_map, SceneRule(scene="canyon", tags={"highway": "tertiary"}))
    assert _edges_with(sm, "canyon") == {(8, 9), (9, 8)}


def test_false_means_absent(toy_map: RoadMap) -> None:
    sm = _scenes(toy_map, SceneRule(scene="canyon", tags={"layer": False}), default="bridge")
    assert _edges_with(sm, "bridge") == {(1, 2), (2, 1), (5, 6), (6, 5)}
    assert sm.edge_counts()["canyon"] == toy_map.n_edges - 4


def test_all_conditions_must_hold(toy_map: RoadMap) -> None:
    sm = _scenes(toy_map, SceneRule(scene="tunnel", tags={"layer": True, "tunnel": "yes"}))
    assert _edges_with(sm, "tunnel") == {(5, 6), (6, 5)}
    sm = _scenes(toy_map, SceneRule(scene="tunnel", tags={"layer": "1", "tunnel": "yes"}))
    assert sm.edge_counts()["tunnel"] == 0


def test_first_match_wins(toy_map: RoadMap) -> None:
    bridge = SceneRule(scene="bridge", tags={"bridge": "yes"})
    layered = SceneRule(scene="canyon", tags={"layer": True})
    sm = _scenes(toy_map, bridge, layered)
    assert _edges_with(sm, "bridge") == {(1, 2), (2, 1)}
    assert _edges_with(sm, "canyon") == {(5, 6), (6, 5)}
    sm = _scenes(toy_map, layered, bridge)
    assert sm.edge_counts()["bridge"] == 0
    assert _edges_with(sm, "canyon") == {(1, 2), (2, 1), (5, 6), (6, 5)}


def _square_lonlat(roadmap: RoadMap, x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    xs = np.array([x0, x1, x1, x0])
    ys = np.array([y0, y0, y1, y1])
    lon, lat = roadmap.to_lonlat(xs, ys)
    return list(zip(lon.tolist(), lat.tolist(), strict=True))


def test_polygon_rule(toy_map: RoadMap) -> None:
    x7, y7 = toy_map.node_xy(7)
    x9, _ = toy_map.node_xy(9)
    # a strip around the top row (7 - 8 - 9): only the horizontal edges have their midpoints inside
    strip = _square_lonlat(toy_map, x7 - 10.0, y7 - 10.0, x9 + 10.0, y7 + 10.0)
    sm = _scenes(toy_map, SceneRule(scene="canyon", polygon=strip))
    assert _edges_with(sm, "canyon") == {(7, 8), (8, 7), (8, 9), (9, 8)}
    both = SceneRule(scene="canyon", polygon=strip, tags={"highway": "tertiary"})
    assert _edges_with(_scenes(toy_map, both), "canyon") == {(8, 9), (9, 8)}


def test_unknown_scene_is_a_value_error(toy_map: RoadMap) -> None:
    with pytest.raises(ValueError, match=r"unknown scene 'ferry' \(allowed: street, bridge, tunnel, canyon\)"):
        _scenes(toy_map, SceneRule(scene="ferry", tags={"bridge": "yes"}))
    with pytest.raises(ValueError, match="unknown scene 'sea'"):
        _scenes(toy_map, default="sea")
    sm = _scenes(toy_map)
    with pytest.raises(ValueError, match="unknown scene"):
        sm.scene_index("sea")


def test_nyc_scene_counts(nyc_map: RoadMap) -> None:
    sm = SceneMap(
        nyc_map,
        SceneRules(
            default="street",
            rules=[
                SceneRule(scene="bridge", tags={"bridge": "yes"}),
                SceneRule(scene="tunnel", tags={"tunnel": True}),
            ],
        ),
        ["street", "bridge", "tunnel"],
    )
    counts = sm.edge_counts()
    assert sum(counts.values()) == nyc_map.n_edges
    assert counts["bridge"] > 20 and counts["tunnel"] > 5
    tunnel_values = {str(nyc_map.edge_tags[i]["tunnel"]) for i in np.flatnonzero(sm.edge_scene == 2)}
    assert tunnel_values == {"yes", "building_passage"}  # `true` means any value
