"""Loading road maps: every source kind, every failure, and the edge table."""

from __future__ import annotations

import bz2
import shutil
from pathlib import Path

import networkx as nx
import numpy as np
import osmnx as ox
import pyrosm
import pytest

from ivsim.config.schema import MapSpec
from ivsim.errors import MapError
from ivsim.world import SPLIT_AT_TAGS, RoadMap, load_map, maps

from .conftest import MIDTOWN_DRIVE, NYC_DRIVE

ONE_NODE_OSM = """<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6" generator="test">
  <node id="1" lat="40.7128" lon="-74.0060"/>
</osm>
"""

FOOTWAY_OSM = """<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6" generator="test">
  <node id="1" lat="40.7128" lon="-74.0060"/>
  <node id="2" lat="40.7138" lon="-74.0060"/>
  <way id="10"><nd ref="1"/><nd ref="2"/><tag k="highway" v="footway"/></way>
  <way id="11"><nd ref="2"/><nd ref="1"/><tag k="building" v="yes"/></way>
</osm>
"""


def _load(path: Path | str, **kwargs: object) -> RoadMap:
    return load_map(MapSpec(source=str(path), **kwargs))


# --------------------------------------------------------------------------- sources


def test_nyc_bz2_loads(nyc_map: RoadMap) -> None:
    assert nyc_map.name == "nyc_lower_manhattan_brooklyn_drive"
    assert nyc_map.source == str(NYC_DRIVE)
    assert nyc_map.crs.is_projected
    assert nyc_map.crs.to_epsg() == 32618
    assert (nyc_map.n_nodes, nyc_map.n_edges) == (1505, 2982)
    min_lon, min_lat, max_lon, max_lat = nyc_map.bounds_lonlat
    assert -74.04 < min_lon < max_lon < -73.96
    assert 40.69 < min_lat < max_lat < 40.74


def test_largest_strongly_connected_component_kept(nyc_map: RoadMap) -> None:
    assert nx.is_strongly_connected(nyc_map.graph)


def test_speeds_and_travel_times(nyc_map: RoadMap) -> None:
    assert np.all(nyc_map.speed_mps > 0)
    assert np.all(nyc_map.travel_time_s > 0)
    assert np.allclose(nyc_map.travel_time_s, nyc_map.length_m / nyc_map.speed_mps, rtol=1e-3)
    for _, _, data in nyc_map.graph.edges(data=True):
        assert data["speed_kph"] > 0
        assert data["travel_time"] > 0


def test_osm_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "midtown.osm"
    with bz2.open(MIDTOWN_DRIVE, "rb") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    roadmap = _load(path)
    assert roadmap.name == "midtown"
    assert roadmap.n_edges > 1000
    assert nx.is_strongly_connected(roadmap.graph)
    assert any(tags.get("tunnel") == "yes" for tags in roadmap.edge_tags)  # Lincoln / Queens-Midtown


def test_builtin_helsinki_loads() -> None:
    roadmap = _load("builtin:helsinki")
    assert roadmap.name == "helsinki"
    assert roadmap.crs.is_projected
    assert roadmap.n_edges > 100
    assert nx.is_strongly_connected(roadmap.graph)
    assert 24.9 < roadmap.bounds_lonlat[0] < 25.0
    assert any(tags.get("bridge") == "yes" for tags in roadmap.edge_tags)


def test_pbf_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "helsinki.osm.pbf"
    shutil.copy(pyrosm.get_data("helsinki_pbf"), path)
    roadmap = _load(path)
    assert roadmap.name == "helsinki"
    assert roadmap.n_edges > 100
    assert np.all(roadmap.travel_time_s > 0)


def test_graphml_loads_and_speeds_override(tmp_path: Path, toy_graph: nx.MultiDiGraph) -> None:
    path = tmp_path / "toy.graphml"
    ox.save_graphml(toy_graph, path)
    roadmap = _load(path, speeds_kph={"residential": 18.0}, fallback_speed_kph=30.0)
    assert roadmap.n_nodes == 9
    assert roadmap.crs.to_epsg() == 32618
    residential = np.array([tags["highway"] == "residential" for tags in roadmap.edge_tags])
    assert np.allclose(roadmap.speed_mps[residential], 18.0 / 3.6)
    service = np.array([tags["highway"] == "service" for tags in roadmap.edge_tags])
    assert np.allclose(roadmap.speed_mps[service], 5.0 / 3.6)  # its own maxspeed
    bridge = roadmap.edge_index[(1, 2, 0)]
    assert roadmap.edge_tags[bridge]["bridge"] == "yes"
    merged = roadmap.edge_index[(8, 9, 0)]
    assert roadmap.edge_tags[merged]["highway"] == ["residential", "tertiary"]


# --------------------------------------------------------------------------- failures


def _assert_one_line_naming(err: pytest.ExceptionInfo[MapError], path: Path | str) -> str:
    text = str(err.value)
    assert "\n" not in text
    assert str(path) in text
    return text


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.osm.bz2"
    with pytest.raises(MapError) as err:
        _load(path)
    assert "does not exist" in _assert_one_line_naming(err, path)


@pytest.mark.parametrize("name", ["junk.osm", "junk.osm.bz2", "junk.osm.pbf", "junk.graphml"])
def test_corrupt_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MapError) as err:
        _load(path)
    assert "cannot read" in _assert_one_line_naming(err, path)


def test_wrong_extension(tmp_path: Path) -> None:
    path = tmp_path / "roads.json"
    path.write_text("{}")
    with pytest.raises(MapError) as err:
        _load(path)
    text = _assert_one_line_naming(err, path)
    for allowed in (".osm", ".osm.bz2", ".osm.pbf", ".graphml", "builtin:helsinki"):
        assert allowed in text


def test_unknown_builtin() -> None:
    with pytest.raises(MapError, match=r"builtin:paris.*allowed: builtin:helsinki"):
        _load("builtin:paris")


def test_osm_without_roads(tmp_path: Path) -> None:
    path = tmp_path / "one_node.osm"
    path.write_text(ONE_NODE_OSM)
    with pytest.raises(MapError) as err:
        _load(path)
    assert "no drivable roads" in _assert_one_line_naming(err, path)


def test_osm_with_only_footways_and_buildings(tmp_path: Path) -> None:
    path = tmp_path / "footway.osm"
    path.write_text(FOOTWAY_OSM)
    with pytest.raises(MapError) as err:
        _load(path)
    assert "no drivable roads" in _assert_one_line_naming(err, path)


def test_graphml_that_is_not_a_road_graph(tmp_path: Path) -> None:
    path = tmp_path / "plain.graphml"
    nx.write_graphml(nx.path_graph(3), path)
    with pytest.raises(MapError) as err:
        _load(path)
    _assert_one_line_naming(err, path)


def test_from_graph_rejects_unprojected(toy_graph: nx.MultiDiGraph) -> None:
    toy_graph.graph["crs"] = "EPSG:4326"
    with pytest.raises(MapError, match="not projected"):
        RoadMap.from_graph(toy_graph, source="toy")


# --------------------------------------------------------------------------- edge table


def test_edge_table_consistent(nyc_map: RoadMap) -> None:
    n = nyc_map.n_edges
    for array in (nyc_map.edge_u, nyc_map.edge_v, nyc_map.edge_key, nyc_map.length_m, nyc_map.polyline_m):
        assert array.shape == (n,)
        assert not array.flags.writeable
    assert len(nyc_map.edge_xy) == len(nyc_map.edge_tags) == len(nyc_map.edge_index) == n
    assert nyc_map.edge_mid_lonlat.shape == (n, 2)
    for i in range(0, n, 7):
        u, v, k = int(nyc_map.edge_u[i]), int(nyc_map.edge_v[i]), int(nyc_map.edge_key[i])
        assert nyc_map.edge_index[(u, v, k)] == i
        xy = nyc_map.edge_xy[i]
        assert xy.shape[1] == 2 and len(xy) >= 2
        assert tuple(xy[0]) == nyc_map.node_xy(u)
        assert tuple(xy[-1]) == nyc_map.node_xy(v)
        geom = nyc_map.graph.edges[u, v, k].get("geometry")
        if geom is not None:
            assert np.allclose(np.asarray(geom.coords)[[0, -1]], xy[[0, -1]], atol=1e-6)
        seg = np.hypot(*np.diff(xy, axis=0).T)
        assert seg.sum() == pytest.approx(nyc_map.polyline_m[i])
    # polyline (UTM) and OSM (great-circle) lengths agree to the UTM scale error
    assert np.allclose(nyc_map.polyline_m, nyc_map.length_m, rtol=5e-3, atol=0.05)
    lo, la, hi_lo, hi_la = nyc_map.bounds_lonlat
    mid = nyc_map.edge_mid_lonlat
    assert np.all((mid[:, 0] >= lo - 1e-3) & (mid[:, 0] <= hi_lo + 1e-3))
    assert np.all((mid[:, 1] >= la - 1e-3) & (mid[:, 1] <= hi_la + 1e-3))


def test_edge_tags_are_strings(nyc_map: RoadMap) -> None:
    for tags in nyc_map.edge_tags:
        assert "geometry" not in tags and "length" not in tags and "osmid" not in tags
        assert tags["oneway"] in ("yes", "no")
        for value in tags.values():
            assert isinstance(value, str) or (isinstance(value, list) and all(isinstance(x, str) for x in value))
    assert any(tags.get("bridge") == "yes" for tags in nyc_map.edge_tags)
    assert any("layer" in tags for tags in nyc_map.edge_tags)  # kept on top of osmnx's defaults
    assert any(isinstance(tags.get("lanes"), list) for tags in nyc_map.edge_tags)  # merged ways
    # ... but never merged across a change of these, so a bridge edge is bridge from end to end
    for tags in nyc_map.edge_tags:
        assert not any(isinstance(tags.get(key), list) for key in SPLIT_AT_TAGS)


def test_toy_geometry_turned_around(toy_map: RoadMap) -> None:
    i = toy_map.edge_index[(2, 3, 0)]
    xy = toy_map.edge_xy[i]
    assert tuple(xy[0]) == toy_map.node_xy(2)
    assert tuple(xy[-1]) == toy_map.node_xy(3)
    assert xy[1] == pytest.approx((toy_map.node_xy(2)[0] + 50.0, toy_map.node_xy(2)[1] - 20.0))
    j = toy_map.edge_index[(1, 2, 0)]
    assert toy_map.edge_tags[j] == {
        "highway": "residential",
        "oneway": "no",
        "name": "Toy Bridge",
        "bridge": "yes",
        "layer": "1",
    }
    assert toy_map.edge_mid_lonlat.shape == (toy_map.n_edges, 2)


def test_coordinate_transforms(nyc_map: RoadMap) -> None:
    x, y = nyc_map.to_xy(-74.0060, 40.7128)
    assert isinstance(x, float) and isinstance(y, float)
    lon, lat = nyc_map.to_lonlat(x, y)
    assert (lon, lat) == pytest.approx((-74.0060, 40.7128), abs=1e-9)
    lons = np.array([-74.0, -73.99, -73.98])
    lats = np.array([40.70, 40.71, 40.72])
    xs, ys = nyc_map.to_xy(lons, lats)
    assert xs.shape == (3,)
    back = np.column_stack(nyc_map.to_lonlat(xs, ys))
    assert np.allclose(back, np.column_stack([lons, lats]), atol=1e-9)


def test_nearest_node(nyc_map: RoadMap) -> None:
    node = int(nyc_map.node_ids[17])
    x, y = nyc_map.node_xy(node)
    found, dist = nyc_map.nearest_node(x + 0.5, y)
    assert found == node
    assert dist == pytest.approx(0.5)
    nodes, dists = nyc_map.nearest_node(nyc_map.nodes_xy[:50, 0], nyc_map.nodes_xy[:50, 1])
    assert np.array_equal(nodes, nyc_map.node_ids[:50])
    assert np.all(dists == 0)


def test_non_positive_edge_speed_is_floored_so_vehicles_move() -> None:
    import networkx as nx

    graph = nx.MultiDiGraph(crs="EPSG:32618")
    graph.add_node(1, x=0.0, y=0.0)
    graph.add_node(2, x=100.0, y=0.0)
    graph.add_edge(1, 2, 0, length=100.0, speed_kph=0.0, travel_time=float("inf"), highway="residential")
    graph.add_edge(2, 1, 0, length=100.0, speed_kph=36.0, travel_time=10.0, highway="residential")
    roadmap = RoadMap(graph, source="toy", name="toy")
    fwd = roadmap.edge_index[(1, 2, 0)]
    back = roadmap.edge_index[(2, 1, 0)]
    assert roadmap.speed_mps[fwd] == pytest.approx(5.0 / 3.6)
    assert roadmap.travel_time_s[fwd] == pytest.approx(100.0 / (5.0 / 3.6))
    assert roadmap.speed_mps[back] == pytest.approx(10.0)


# --------------------------------------------------------------------------- the map cache


def _same_map(a: RoadMap, b: RoadMap) -> None:
    assert (a.name, a.source, a.n_nodes, a.n_edges, a.crs) == (b.name, b.source, b.n_nodes, b.n_edges, b.crs)
    for column in ("node_ids", "edge_u", "edge_v", "edge_key", "length_m", "polyline_m", "speed_mps", "travel_time_s"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column), err_msg=column)
    assert list(a.edge_tags) == list(b.edge_tags)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A fresh cache folder, and the list of sources built (not read from the cache) since."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(maps.MAP_CACHE_ENV, str(folder))
    built: list[str] = []
    build = maps._build_graph

    def counting(source: str, spec: MapSpec):
        built.append(source)
        return build(source, spec)

    monkeypatch.setattr(maps, "_build_graph", counting)
    return folder / "maps", built


def test_map_cache_gives_the_map_it_built(cache: tuple[Path, list[str]], tmp_path: Path) -> None:
    folder, built = cache
    first = _load(MIDTOWN_DRIVE)
    assert built == [str(MIDTOWN_DRIVE)] and len(list(folder.glob("*.pickle"))) == 1
    again = _load(MIDTOWN_DRIVE)
    assert built == [str(MIDTOWN_DRIVE)]  # read, not built
    _same_map(first, again)
    # the same bytes under another name: the cached graph, with the new file's name and source
    copy = tmp_path / "copy_of_midtown.osm.bz2"
    shutil.copyfile(MIDTOWN_DRIVE, copy)
    renamed = _load(copy)
    assert len(built) == 1 and renamed.name == "copy_of_midtown" and renamed.source == str(copy)
    # other speed settings, or other bytes: built anew, in their own entries
    _load(MIDTOWN_DRIVE, fallback_speed_kph=30.0)
    _load(MIDTOWN_DRIVE, speeds_kph={"primary": 35.0})
    with bz2.open(MIDTOWN_DRIVE, "rb") as src:
        copy.write_bytes(bz2.compress(src.read(), compresslevel=1))  # same roads, other bytes
    _load(copy)
    assert len(built) == 4 and len(list(folder.glob("*.pickle"))) == 4


def test_map_cache_never_hides_a_bad_source(cache: tuple[Path, list[str]], tmp_path: Path) -> None:
    _load(MIDTOWN_DRIVE)
    wrong_kind = tmp_path / "midtown.txt"
    shutil.copyfile(MIDTOWN_DRIVE, wrong_kind)
    with pytest.raises(MapError, match="unknown map file kind"):
        _load(wrong_kind)
    with pytest.raises(MapError, match="does not exist"):
        _load(tmp_path / "gone.osm.bz2")


def test_map_cache_rebuilds_an_unreadable_entry(cache: tuple[Path, list[str]], caplog) -> None:
    folder, built = cache
    first = _load(MIDTOWN_DRIVE)
    (entry,) = folder.glob("*.pickle")
    entry.write_bytes(entry.read_bytes()[:1000])  # truncated
    with caplog.at_level("INFO", logger="ivsim.world.maps"):
        again = _load(MIDTOWN_DRIVE)
    assert len(built) == 2 and "unreadable" in caplog.text
    _same_map(first, again)
    _load(MIDTOWN_DRIVE)
    assert len(built) == 2  # the rebuilt entry was written back


def test_map_cache_off_or_unwritable(cache: tuple[Path, list[str]], tmp_path: Path, monkeypatch) -> None:
    _, built = cache
    monkeypatch.setenv(maps.MAP_CACHE_ENV, "")
    assert maps.map_cache_dir() is None
    _load(MIDTOWN_DRIVE)
    _load(MIDTOWN_DRIVE)
    assert len(built) == 2
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(maps.MAP_CACHE_ENV, str(blocker))
    assert _load(MIDTOWN_DRIVE).n_edges > 1000  # the entry cannot be written: only the time is lost
    monkeypatch.delenv(maps.MAP_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert maps.map_cache_dir() == tmp_path / "xdg" / "ivsim" / "maps"
