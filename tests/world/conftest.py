"""World fixtures: the bundled NYC map (loaded once) and a small synthetic projected grid."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
import shapely

from ivsim.config.schema import MapSpec
from ivsim.world import RoadMap, load_map

MAPS = Path(__file__).resolve().parents[2] / "scenarios" / "maps"
NYC_DRIVE = MAPS / "nyc_lower_manhattan_brooklyn_drive.osm.bz2"
MIDTOWN_DRIVE = MAPS / "nyc_midtown_manhattan_drive.osm.bz2"

# Lower Manhattan, UTM zone 18N: the toy grid sits near City Hall.
TOY_CRS = "EPSG:32618"
TOY_X0_M = 583_500.0
TOY_Y0_M = 4_507_000.0
TOY_STEP_M = 100.0


@pytest.fixture(scope="session")
def nyc_map() -> RoadMap:
    """The bundled Lower Manhattan / Brooklyn drive map."""
    return load_map(MapSpec(source=str(NYC_DRIVE)))


def _toy_graph() -> nx.MultiDiGraph:
    """A 3 x 3 grid, 100 m apart, two-way residential streets, nodes numbered row by row.

    ::

        7 - 8 - 9
        |   |   |
        4 = 5 - 6        4 = 5: two parallel edges each way (key 1 is slower)
        |   |   |
        1 - 2 - 3        1 - 2 bridge=yes layer=1 (both ways); 5 - 6 tunnel=yes (both ways)

    8 - 9 is ``highway=['residential', 'tertiary']`` (a merged way); 2 -> 3 has a curved geometry
    stored the wrong way round (v -> u), which the edge table must turn around.
    """
    graph = nx.MultiDiGraph(crs=TOY_CRS, name="toy")
    for row in range(3):
        for col in range(3):
            node = 1 + 3 * row + col
            graph.add_node(node, x=TOY_X0_M + TOY_STEP_M * col, y=TOY_Y0_M + TOY_STEP_M * row)
    pairs = [(1, 2), (2, 3), (4, 5), (5, 6), (7, 8), (8, 9), (1, 4), (4, 7), (2, 5), (5, 8), (3, 6), (6, 9)]
    for a, b in pairs:
        for u, v in ((a, b), (b, a)):
            graph.add_edge(u, v, highway="residential", oneway=False, length=TOY_STEP_M, name=f"street {a}-{b}")
    for u, v in ((1, 2), (2, 1)):
        graph.edges[u, v, 0].update(bridge="yes", layer="1", name="Toy Bridge")
    for u, v in ((5, 6), (6, 5)):
        graph.edges[u, v, 0].update(tunnel="yes", layer="-1", name="Toy Tunnel")
    for u, v in ((8, 9), (9, 8)):
        graph.edges[u, v, 0]["highway"] = ["residential", "tertiary"]
    for u, v in ((4, 5), (5, 4)):
        graph.add_edge(u, v, highway="service", oneway=False, length=TOY_STEP_M, maxspeed="5")
    x2, y2 = graph.nodes[2]["x"], graph.nodes[2]["y"]
    x3, y3 = graph.nodes[3]["x"], graph.nodes[3]["y"]
    bent = shapely.LineString([(x3, y3), (x2 + 50.0, y2 - 20.0), (x2, y2)])  # runs 3 -> 2 on edge 2 -> 3
    graph.edges[2, 3, 0].update(geometry=bent, length=float(bent.length))
    graph.edges[3, 2, 0].update(geometry=shapely.LineString(bent.coords[::-1]), length=float(bent.length))
    return graph


@pytest.fixture
def toy_graph() -> nx.MultiDiGraph:
    """A fresh synthetic projected grid graph (see :func:`_toy_graph`)."""
    return _toy_graph()


@pytest.fixture
def toy_map(toy_graph: nx.MultiDiGraph) -> RoadMap:
    """The toy grid wrapped in a :class:`RoadMap` (speeds filled in with the 40 km/h fallback)."""
    return RoadMap.from_graph(toy_graph, source="toy", name="toy")
