"""Routing: fastest paths, route geometry, places, and the fleet fast path."""

from __future__ import annotations

import time

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivsim.config.schema import LonLat, NodeRef, NodeSampler, SceneRule, SceneRules
from ivsim.errors import RouteError
from ivsim.world import RoadMap, Route, Router, SceneMap, candidate_nodes, nodes_in_polygon

CITY_HALL = LonLat(lon=-74.0060, lat=40.7128)
DOWNTOWN_BROOKLYN = LonLat(lon=-73.9903, lat=40.6928)


@pytest.fixture(scope="module")
def nyc_router(nyc_map: RoadMap) -> Router:
    return Router(nyc_map)


@pytest.fixture(scope="module")
def brooklyn_route(nyc_router: Router) -> Route:
    return nyc_router.route(CITY_HALL, DOWNTOWN_BROOKLYN)


def _segment_distance(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest segment of a polyline."""
    a = polyline[:-1][None, :, :]
    b = polyline[1:][None, :, :]
    p = points[:, None, :]
    ab = b - a
    denom = np.maximum(np.sum(ab * ab, axis=-1), 1e-300)
    t = np.clip(np.sum((p - a) * ab, axis=-1) / denom, 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.min(np.hypot(*(p - closest).transpose(2, 0, 1)), axis=1)


def _check_route(roadmap: RoadMap, route: Route) -> None:
    edges = route.edges
    assert len(route.nodes) == len(edges) + 1
    assert np.array_equal(roadmap.edge_u[edges], route.nodes[:-1])
    assert np.array_equal(roadmap.edge_v[edges], route.nodes[1:])
    assert np.array_equal(roadmap.edge_v[edges[:-1]], roadmap.edge_u[edges[1:]])  # contiguous
    assert route.cum_m[0] == 0.0
    assert np.all(np.diff(route.cum_m) >= 0)
    assert route.length_m == route.cum_m[-1]
    assert route.xy.shape == (len(route.cum_m), 2)
    assert np.all(np.any(np.diff(route.xy, axis=0) != 0, axis=1))  # no duplicated joints
    assert route.edge_start_m[0] == 0.0
    assert route.edge_end_m[-1] == route.length_m
    assert np.array_equal(route.edge_start_m[1:], route.edge_end_m[:-1])
    assert np.allclose(route.edge_end_m - route.edge_start_m, roadmap.polyline_m[edges], rtol=1e-12, atol=1e-9)
    assert route.position(0.0) == roadmap.node_xy(route.nodes[0])
    assert route.position(route.length_m) == roadmap.node_xy(route.nodes[-1])
    assert route.position(-5.0) == route.position(0.0)
    assert route.position(route.length_m + 5.0) == route.position(route.length_m)
    for k, e in enumerate(edges):
        assert route.position(float(route.edge_start_m[k])) == pytest.approx(roadmap.node_xy(roadmap.edge_u[e]))


# --------------------------------------------------------------------------- NYC


def test_city_hall_to_brooklyn_crosses_a_bridge(nyc_map: RoadMap, brooklyn_route: Route) -> None:
    _check_route(nyc_map, brooklyn_route)
    tags = [nyc_map.edge_tags[e] for e in brooklyn_route.edges]
    assert any(t.get("bridge") == "yes" for t in tags)
    assert any(t.get("name") == "Brooklyn Bridge" for t in tags)
    scenes = SceneMap(
        nyc_map,
        SceneRules(default="street", rules=[SceneRule(scene="bridge", tags={"bridge": "yes"})]),
        ["street", "bridge"],
    )
    on_route = scenes.route_scenes(brooklyn_route)
    assert scenes.names.index("bridge") in on_route
    bridge_edges = [e for e in brooklyn_route.edges if scenes.scene_of(e) == "bridge"]
    assert bridge_edges and all(nyc_map.edge_tags[e]["bridge"] == "yes" for e in bridge_edges)
    # it starts and ends at the nodes nearest the requested points (Downtown Brooklyn's point is
    # just south of the extract, about 250 m from the nearest node)
    for place, s_m in ((CITY_HALL, 0.0), (DOWNTOWN_BROOKLYN, brooklyn_route.length_m)):
        node, dist_m = nyc_map.nearest_node(*nyc_map.to_xy(place.lon, place.lat))
        assert dist_m < 300
        assert brooklyn_route.position(s_m) == nyc_map.node_xy(node)


def test_positions_lie_on_the_polyline(brooklyn_route: Route) -> None:
    s = np.linspace(0.0, brooklyn_route.length_m, 501)
    x, y = brooklyn_route.position(s)
    assert x.shape == s.shape
    assert np.max(_segment_distance(np.column_stack([x, y]), brooklyn_route.xy)) < 1e-6
    k = brooklyn_route.edge_at(s)
    assert np.all(np.diff(k) >= 0)
    assert k[0] == 0 and k[-1] == brooklyn_route.n_edges - 1
    assert isinstance(brooklyn_route.edge_at(1.0), int)


@settings(max_examples=200, deadline=None)
@given(frac=st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
def test_position_is_on_the_edge_edge_at_names(nyc_map: RoadMap, brooklyn_route: Route, frac: float) -> None:
    s = frac * brooklyn_route.length_m
    k = brooklyn_route.edge_at(s)
    point = np.array([brooklyn_route.position(s)])
    polyline = nyc_map.edge_xy[brooklyn_route.edges[k]]
    assert _segment_distance(point, polyline)[0] <= 1e-6
    assert brooklyn_route.edge_start_m[k] <= s <= brooklyn_route.edge_end_m[k]


def test_via_points_respected(nyc_map: RoadMap, nyc_router: Router) -> None:
    via = LonLat(lon=-73.9976, lat=40.7150)  # Chinatown, off the direct line
    via_node = nyc_router.node_for(via)
    direct = nyc_router.route(CITY_HALL, DOWNTOWN_BROOKLYN)
    assert via_node not in direct.nodes
    route = nyc_router.route(CITY_HALL, DOWNTOWN_BROOKLYN, via=[via])
    _check_route(nyc_map, route)
    assert via_node in route.nodes
    first = nyc_router.route(CITY_HALL, via)
    second = nyc_router.route(via, DOWNTOWN_BROOKLYN)
    assert route.nodes == first.nodes + second.nodes[1:]
    assert route.length_m == pytest.approx(first.length_m + second.length_m)
    assert nyc_router.travel_time_s(route) > nyc_router.travel_time_s(direct)


def test_round_trip_through_a_via_point(nyc_router: Router) -> None:
    route = nyc_router.route(CITY_HALL, CITY_HALL, via=[DOWNTOWN_BROOKLYN])
    assert route.nodes[0] == route.nodes[-1]
    assert nyc_router.node_for(DOWNTOWN_BROOKLYN) in route.nodes


def test_places_as_node_ref_and_int(nyc_map: RoadMap, nyc_router: Router, brooklyn_route: Route) -> None:
    o, d = brooklyn_route.nodes[0], brooklyn_route.nodes[-1]
    by_ref = nyc_router.route(NodeRef(node=o), NodeRef(node=d))
    by_int = nyc_router.route(o, np.int64(d))
    assert by_ref.nodes == by_int.nodes == brooklyn_route.nodes
    assert nyc_router.route_nodes(o, d) == brooklyn_route.nodes


def test_off_map_point(nyc_router: Router) -> None:
    with pytest.raises(RouteError, match=r"lon -73\.5, lat 40\.7.*off the map.*lon -74\.0\d+\.\.-73\.9\d+"):
        nyc_router.route(LonLat(lon=-73.5, lat=40.7), DOWNTOWN_BROOKLYN)


def test_max_snap_m_is_configurable(nyc_map: RoadMap) -> None:
    x, y = nyc_map.node_xy(int(nyc_map.node_ids[0]))
    lon, lat = nyc_map.to_lonlat(x + 30.0, y + 30.0)
    strict = Router(nyc_map, max_snap_m=1.0)
    with pytest.raises(RouteError, match="off the map"):
        strict.node_for(LonLat(lon=lon, lat=lat))
    assert Router(nyc_map).node_for(LonLat(lon=lon, lat=lat)) in nyc_map.graph


def test_unknown_node(nyc_router: Router) -> None:
    with pytest.raises(RouteError, match="node 1 is not in the road graph"):
        nyc_router.route(NodeRef(node=1), DOWNTOWN_BROOKLYN)
    with pytest.raises(RouteError, match="node 2 is not in the road graph"):
        nyc_router.route(CITY_HALL, 2)
    with pytest.raises(RouteError, match="not in the road graph"):
        nyc_router.route_nodes(3, 4)


def test_same_origin_and_destination(nyc_router: Router) -> None:
    with pytest.raises(RouteError, match="same node"):
        nyc_router.route(CITY_HALL, CITY_HALL)


def test_csgraph_matches_networkx(nyc_map: RoadMap, nyc_router: Router) -> None:
    rng = np.random.default_rng(2024)
    pairs = rng.choice(nyc_map.node_ids, size=(40, 2))
    for o, d in pairs:
        if o == d:
            continue
        fast = list(nyc_router.route_nodes(int(o), int(d)))
        reference = nx.shortest_path(nyc_map.graph, int(o), int(d), weight="travel_time")
        if fast != reference:  # an exact tie between two paths
            cost = nx.path_weight(nyc_map.graph, fast, "travel_time")
            assert cost == pytest.approx(nx.path_weight(nyc_map.graph, reference, "travel_time"), rel=1e-12)
        route = nyc_router.route(int(o), int(d))
        assert list(route.nodes) == fast
        assert nyc_router.travel_time_s(route) == pytest.approx(
            nx.shortest_path_length(nyc_map.graph, int(o), int(d), weight="travel_time")
        )


def test_fleet_trips_are_fast(nyc_map: RoadMap) -> None:
    router = Router(nyc_map)
    rng = np.random.default_rng(5)
    pairs = [(int(o), int(d)) for o, d in rng.choice(nyc_map.node_ids, size=(3000, 2)) if o != d]
    anchor = int(nyc_map.node_ids[0])
    for o in nyc_map.node_ids[1:]:  # warm-up: one shortest-path tree per source
        router.route_nodes(int(o), anchor)
    start = time.perf_counter()
    for o, d in pairs:
        router.route(o, d)
    per_trip_s = (time.perf_counter() - start) / len(pairs)
    assert per_trip_s < 2e-3  # ~0.1 ms on a laptop; generous for loaded CI machines


def test_tree_cache_is_bounded(nyc_map: RoadMap) -> None:
    router = Router(nyc_map, max_cached_sources=3)
    nodes = [int(n) for n in nyc_map.node_ids[:10]]
    target = int(nyc_map.node_ids[-1])
    first = [router.route_nodes(o, target) for o in nodes]
    assert router.n_cached_trees == 3
    assert [router.route_nodes(o, target) for o in nodes] == first


# --------------------------------------------------------------------------- toy grid


def test_toy_route_geometry_and_parallel_edges(toy_map: RoadMap) -> None:
    router = Router(toy_map)
    route = router.route(4, 6)
    _check_route(toy_map, route)
    assert route.nodes == (4, 5, 6)
    first = int(route.edges[0])
    assert (toy_map.edge_u[first], toy_map.edge_v[first], toy_map.edge_key[first]) == (4, 5, 0)  # faster key
    assert route.length_m == pytest.approx(200.0)
    x, y = route.position(150.0)
    assert (x, y) == pytest.approx((toy_map.node_xy(5)[0] + 50.0, toy_map.node_xy(5)[1]))
    assert route.edge_at(100.0) == 1
    assert route.edge_at(99.999) == 0
    assert route.heading_rad(50.0) == pytest.approx(0.0)  # due east
    up = Router(toy_map).route(1, 7)
    assert np.allclose(up.heading_rad(np.array([10.0, 150.0])), np.pi / 2)  # due north


def test_toy_route_over_bent_edge(toy_map: RoadMap) -> None:
    route = Router(toy_map).route_from_nodes([1, 2, 3])
    _check_route(toy_map, route)
    assert len(route.xy) == 4  # 1, 2, bend, 3
    assert route.length_m == pytest.approx(100.0 + toy_map.polyline_m[toy_map.edge_index[(2, 3, 0)]])


def test_unreachable(toy_graph: nx.MultiDiGraph) -> None:
    toy_graph.add_node(10, x=toy_graph.nodes[9]["x"] + 100.0, y=toy_graph.nodes[9]["y"])
    toy_graph.add_edge(9, 10, highway="residential", oneway=True, length=100.0)
    router = Router(RoadMap.from_graph(toy_graph, source="toy"))
    assert router.route(1, 10).nodes[-2:] == (9, 10)
    with pytest.raises(RouteError, match="no route from node 10 to node 1"):
        router.route(10, 1)
    with pytest.raises(RouteError, match="no edge from node 1 to node 9"):
        router.route_from_nodes([1, 9])


# --------------------------------------------------------------------------- node sampling


def test_nodes_in_polygon(nyc_map: RoadMap) -> None:
    square = [(-74.010, 40.710), (-74.000, 40.710), (-74.000, 40.716), (-74.010, 40.716)]
    nodes = nodes_in_polygon(nyc_map, square)
    assert 0 < len(nodes) < nyc_map.n_nodes
    lonlat = nyc_map.nodes_lonlat[[nyc_map.node_index(n) for n in nodes]]
    assert np.all((lonlat[:, 0] > -74.010) & (lonlat[:, 0] < -74.000))
    assert np.all((lonlat[:, 1] > 40.710) & (lonlat[:, 1] < 40.716))
    sampler = NodeSampler(kind="polygon", polygon=square)
    assert np.array_equal(candidate_nodes(nyc_map, sampler), nodes)
    with pytest.raises(RouteError, match="no road node"):
        nodes_in_polygon(nyc_map, [(-73.0, 40.0), (-72.9, 40.0), (-72.9, 40.1)])


def test_candidate_nodes(nyc_map: RoadMap) -> None:
    assert np.array_equal(candidate_nodes(nyc_map, NodeSampler()), nyc_map.node_ids)
    listed = [int(n) for n in nyc_map.node_ids[:3]]
    assert candidate_nodes(nyc_map, NodeSampler(kind="nodes", nodes=listed)).tolist() == listed
    with pytest.raises(RouteError, match=r"nodes \[1\] are not in the road graph"):
        candidate_nodes(nyc_map, NodeSampler(kind="nodes", nodes=[*listed, 1]))


def test_position_of_one_distance_is_np_interp_bit_for_bit(brooklyn_route: Route) -> None:
    r = brooklyn_route
    rng = np.random.default_rng(2)
    qs = [*rng.uniform(-10, r.length_m + 10, 200).tolist(), *r.cum_m.tolist(), 0.0, r.length_m, -1.0, r.length_m + 1]
    for q in qs:  # the scalar path (a compiled step) against the array path (np.interp)
        x, y = r.position(q)
        xs, ys = r.position(np.array([q]))
        assert isinstance(x, float) and isinstance(y, float)
        assert (x, y) == (float(xs[0]), float(ys[0]))
    assert all(np.isnan(v) for v in (*r.position(float("nan")), *r.position(np.array([np.nan]))))
