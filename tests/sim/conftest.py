"""Simulation fixtures: the NYC map (loaded once), synthetic road maps and scenario builders.

Synthetic maps live in UTM zone 18N near City Hall (like the toy grid of ``tests/world``), so
lon/lat conversions work; base stations on them are placed with ``{x_m, y_m}``. Their edges carry
``speed_kph`` explicitly, so vehicle speeds are exact (36 km/h = 10 m/s).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
import yaml

from ivsim.config.loader import load_scenario, load_scenario_text
from ivsim.config.schema import Scenario
from ivsim.world import RoadMap, load_map

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
DEFAULT_SCENARIO = SCENARIOS / "nyc_brooklyn_bridge.yaml"
ANALYTIC = ("link.fidelity=analytic", "traffic.fps=5")
"""Overrides that turn the default scenario into the analytic-link run the sim tests were written for (fast)."""

CRS = "EPSG:32618"
X0_M = 583_500.0
Y0_M = 4_507_000.0


# ---------------------------------------------------------------------- NYC


@pytest.fixture(scope="session")
def nyc_map() -> RoadMap:
    """The default scenario's map (Lower Manhattan / Brooklyn), loaded once per session."""
    return load_map(load_scenario(DEFAULT_SCENARIO).map)


@pytest.fixture
def default_scenario() -> Scenario:
    """The shipped default scenario with the analytic link at 5 fps (see :data:`ANALYTIC`)."""
    return load_scenario(DEFAULT_SCENARIO, overrides=ANALYTIC)


# ---------------------------------------------------------------------- synthetic maps


def line_graph(n_nodes: int = 21, step_m: float = 100.0, *, speed_kph: float = 36.0) -> nx.MultiDiGraph:
    """A straight two-way road along +x: nodes ``0 .. n_nodes - 1`` at ``(X0_M + k * step_m, Y0_M)``."""
    graph = nx.MultiDiGraph(crs=CRS, name="line")
    for k in range(n_nodes):
        graph.add_node(k, x=X0_M + k * step_m, y=Y0_M)
    for k in range(n_nodes - 1):
        for u, v in ((k, k + 1), (k + 1, k)):
            graph.add_edge(u, v, highway="residential", oneway=False, length=step_m, speed_kph=speed_kph)
    return graph


def line_map(n_nodes: int = 21, step_m: float = 100.0, *, speed_kph: float = 36.0) -> RoadMap:
    """:func:`line_graph` as a :class:`RoadMap`."""
    return RoadMap.from_graph(line_graph(n_nodes, step_m, speed_kph=speed_kph), source="line", name="line")


def grid_graph(rows: int = 4, cols: int = 4, step_m: float = 150.0, *, speed_kph: float = 36.0) -> nx.MultiDiGraph:
    """A ``rows x cols`` grid of two-way streets, node ``r * cols + c`` at column ``c``, row ``r``.

    The streets of the middle row are tagged ``bridge=yes`` (scene ``bridge`` in :func:`grid_scenario`),
    and its vertical streets are faster (``1.5 * speed_kph``), so routes change scene and speed.
    """
    graph = nx.MultiDiGraph(crs=CRS, name="grid")
    for r in range(rows):
        for c in range(cols):
            graph.add_node(r * cols + c, x=X0_M + c * step_m, y=Y0_M + r * step_m)
    mid = rows // 2
    for r in range(rows):
        for c in range(cols):
            a = r * cols + c
            if c + 1 < cols:
                tags = {"bridge": "yes"} if r == mid else {}
                for u, v in ((a, a + 1), (a + 1, a)):
                    graph.add_edge(
                        u, v, highway="residential", oneway=False, length=step_m, speed_kph=speed_kph, **tags
                    )
            if r + 1 < rows:
                for u, v in ((a, a + cols), (a + cols, a)):
                    graph.add_edge(
                        u, v, highway="tertiary", oneway=False, length=step_m, speed_kph=1.5 * speed_kph
                    )
    return graph


def grid_map(rows: int = 4, cols: int = 4, step_m: float = 150.0) -> RoadMap:
    """:func:`grid_graph` as a :class:`RoadMap`."""
    return RoadMap.from_graph(grid_graph(rows, cols, step_m), source="grid", name="grid")


@pytest.fixture(scope="session")
def line_roadmap() -> RoadMap:
    """A 2 km straight road (21 nodes, 100 m apart, 10 m/s)."""
    return line_map()


@pytest.fixture(scope="session")
def grid_roadmap() -> RoadMap:
    """A 4 x 4 grid, 150 m blocks."""
    return grid_map()


# ---------------------------------------------------------------------- scenarios

_BASE: dict[str, Any] = {
    "name": "synthetic",
    "seed": 3,
    "duration_s": 60.0,
    "map": {"source": "synthetic.graphml"},  # never read: tests pass the RoadMap
    "profiles": {
        "umi_nlos": {"model": "umi", "los": False},
        "rma_los": {"model": "rma", "los": True},
    },
    "scenes": {
        "street": {"profile": "umi_nlos", "speed_mps": [0, 20]},
        "bridge": {"profile": "rma_los", "speed_mps": [0, 30]},
    },
    "scene_rules": {"default": "street", "rules": [{"scene": "bridge", "tags": {"bridge": "yes"}}]},
    "base_stations": [],
    "vehicles": [],
    "traffic": {"fps": 5, "frame_bits": 200_000, "deadline_s": 0.1},
}


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``changes`` merged in (nested dicts merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_scenario(changes: dict[str, Any] | None = None, *, base: dict[str, Any] | None = None) -> Scenario:
    """Validate a synthetic scenario: :data:`_BASE` (or ``base``) with ``changes`` merged in."""
    data = deep_merge(_BASE if base is None else base, changes or {})
    return load_scenario_text(yaml.safe_dump(data, sort_keys=False), name="<test>", base_dir=SCENARIOS)


def bs_at(bs_id: str, x_m: float, y_m: float, **extra: Any) -> dict[str, Any]:
    """A base-station entry at projected offsets ``(x_m, y_m)`` from the synthetic maps' origin."""
    return {"id": bs_id, "position": {"x_m": X0_M + x_m, "y_m": Y0_M + y_m}, **extra}


def car(vid: str, origin: int, destination: int, **extra: Any) -> dict[str, Any]:
    """A single vehicle between two node ids."""
    return {"id": vid, "origin": {"node": origin}, "destination": {"node": destination}, **extra}


# ---------------------------------------------------------------------- geometry


def distance_to_polyline(px: np.ndarray, py: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Distance of each point ``(px[i], py[i])`` to the polyline ``xy`` (``(n, 2)``)."""
    p = np.stack([np.asarray(px, dtype=float), np.asarray(py, dtype=float)], axis=1)[:, None, :]  # (m, 1, 2)
    a = xy[:-1][None, :, :]
    b = xy[1:][None, :, :]
    ab = b - a
    denom = np.maximum((ab**2).sum(-1), 1e-300)
    t = np.clip(((p - a) * ab).sum(-1) / denom, 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.sqrt(((p - closest) ** 2).sum(-1)).min(axis=1)


def expected_xy(route: Any, speed_mps: np.ndarray, depart_s: float, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a vehicle that left at ``depart_s`` is at ``t_s``, driving each edge at ``speed_mps[edge]``.

    ``speed_mps`` is the map's edge speed times the vehicle's speed factor, indexed by edge-table row.
    """
    length = route.edge_end_m - route.edge_start_m
    t_edges = depart_s + np.concatenate(([0.0], np.cumsum(length / speed_mps[route.edges])))
    s_edges = np.concatenate(([0.0], route.edge_end_m))
    s = np.interp(np.asarray(t_s, dtype=float), t_edges, s_edges)
    return route.position(s)
