"""Routes: fastest paths over a :class:`~ivsim.world.maps.RoadMap` and positions along them.

:class:`Router` plans routes by travel time with :func:`scipy.sparse.csgraph.dijkstra` and keeps
each source's shortest-path tree in a bounded LRU cache, so a fleet's many random trips cost tens
of microseconds each once the cache is warm. Single vehicles (with via points) and fleet trips use
the same code, so the same origin and destination always give the same path. Between parallel
edges ``(u, v, k)`` the one with the least travel time is taken (ties: the first in the edge table).

A :class:`Route` is a polyline in projected metres with cumulative distance, built from the edge
table's polylines; an edge's length along a route is its polyline length (not OSM ``length``), so
positions are exact: ``position(0)`` is the origin node and ``position(length_m)`` the destination.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from numba import njit
from scipy.sparse import csr_array
from scipy.sparse.csgraph import dijkstra

from ivsim.errors import RouteError

if TYPE_CHECKING:
    from ivsim.config.schema import LonLat, NodeRef, NodeSampler
    from ivsim.world.maps import RoadMap

    Place = LonLat | NodeRef | int

__all__ = ["Route", "Router", "candidate_nodes", "nodes_in_polygon"]

logger = logging.getLogger(__name__)

_MIN_WEIGHT_S = 1e-9  # a zero weight can read as "no edge" to csgraph; keep zero-time edges as edges


@dataclass(frozen=True, eq=False)
class Route:
    """A planned route: its nodes, its edges and its polyline with cumulative distance.

    Attributes
    ----------
    nodes : tuple of int
        Node ids from origin to destination (``len(edges) + 1`` of them).
    edges : numpy.ndarray
        ``(E,)`` int64 edge-table indices, in driving order; ``edge_v`` of one is ``edge_u`` of the next.
    xy : numpy.ndarray
        ``(n, 2)`` polyline in projected metres: the edges' polylines joined, joints not repeated.
    cum_m : numpy.ndarray
        ``(n,)`` distance along the polyline from the origin (``cum_m[0] == 0``), non-decreasing.
    edge_start_m, edge_end_m : numpy.ndarray
        ``(E,)`` distance along the route where each edge starts and ends.
    length_m : float
        Total length, ``cum_m[-1]``.
    """

    nodes: tuple[int, ...]
    edges: np.ndarray
    xy: np.ndarray
    cum_m: np.ndarray
    edge_start_m: np.ndarray
    edge_end_m: np.ndarray
    length_m: float

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return len(self.edges)

    @property
    def origin(self) -> int:
        """First node."""
        return self.nodes[0]

    @property
    def destination(self) -> int:
        """Last node."""
        return self.nodes[-1]

    def position(self, s_m: Any) -> tuple[Any, Any]:
        """Return the point at distance ``s_m`` along the route (clamped to ``[0, length_m]``).

        Parameters
        ----------
        s_m
            A distance or an array of distances in metres.

        Returns
        -------
        tuple
            ``(x_m, y_m)``: floats for a scalar, else arrays shaped like ``s_m``.
        """
        if isinstance(s_m, (float, int)):  # one point: one compiled step instead of five numpy calls
            return _point_at(self.cum_m, self.xy, float(s_m))
        s = np.clip(s_m, 0.0, self.length_m)
        x = np.interp(s, self.cum_m, self.xy[:, 0])
        y = np.interp(s, self.cum_m, self.xy[:, 1])
        if np.ndim(s_m) == 0:
            return float(x), float(y)
        return x, y

    def edge_at(self, s_m: Any) -> Any:
        """Return the position in :attr:`edges` of the edge at distance ``s_m``.

        An edge covers ``[edge_start_m, edge_end_m)``; a point on a joint belongs to the edge that
        starts there, and ``s_m >= length_m`` to the last edge. Zero-length edges are never returned.

        Parameters
        ----------
        s_m
            A distance or an array of distances in metres (clamped to the route).

        Returns
        -------
        int or numpy.ndarray
            Index into :attr:`edges` (``self.edges[k]`` is the edge-table index).
        """
        k = np.searchsorted(self.edge_end_m, s_m, side="right")
        k = np.minimum(k, len(self.edges) - 1)
        if np.ndim(s_m) == 0:
            return int(k)
        return k

    def heading_rad(self, s_m: Any) -> Any:
        """Return the direction of travel at ``s_m``, radians counter-clockwise from east."""
        s = np.clip(s_m, 0.0, self.length_m)
        seg = np.clip(np.searchsorted(self.cum_m, s, side="right") - 1, 0, len(self.cum_m) - 2)
        d = self.xy[seg + 1] - self.xy[seg]
        angle = np.arctan2(d[..., 1], d[..., 0])
        if np.ndim(s_m) == 0:
            return float(angle)
        return angle


class Router:
    """Fastest-path (by ``travel_time``) route planner over a road map.

    Parameters
    ----------
    roadmap
        The map to route on.
    max_snap_m
        A lon/lat point farther than this from every node is off the map.
    max_cached_sources
        At most this many shortest-path trees are kept (least recently used goes first).
    cache_bytes
        ... and at most this many bytes of them (each tree is ``4 * n_nodes`` bytes).
    """

    def __init__(
        self,
        roadmap: RoadMap,
        *,
        max_snap_m: float = 500.0,
        max_cached_sources: int = 4096,
        cache_bytes: int = 256 * 2**20,
    ) -> None:
        self.roadmap = roadmap
        self.max_snap_m = float(max_snap_m)
        n = roadmap.n_nodes
        self._cache_size = max(1, min(int(max_cached_sources), int(cache_bytes) // max(1, 4 * n)))
        self._trees: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

        rows_u = np.fromiter((roadmap.node_index(u) for u in roadmap.edge_u), dtype=np.int64, count=roadmap.n_edges)
        rows_v = np.fromiter((roadmap.node_index(v) for v in roadmap.edge_v), dtype=np.int64, count=roadmap.n_edges)
        weight = np.maximum(roadmap.travel_time_s, _MIN_WEIGHT_S)
        # Best of parallel edges: sort by (u, v, travel time, edge index) and keep each pair's first.
        order = np.lexsort((np.arange(len(weight)), weight, rows_v, rows_u))
        pair = rows_u[order] * n + rows_v[order]
        first = np.concatenate([[True], pair[1:] != pair[:-1]])
        best = order[first]
        self._pair_key = pair[first]  # sorted
        self._pair_edge = best
        self._graph = csr_array((weight[best], (rows_u[best], rows_v[best])), shape=(n, n))
        self._n = n
        self._node_ids = roadmap.node_ids
        self._xy_flat = roadmap.edge_xy_flat
        self._xy_offsets = roadmap.edge_xy_offsets
        # _step_m[p]: distance from flat point p-1 to p (only used where both are on the same edge).
        step = np.zeros(len(self._xy_flat), dtype=np.float64)
        step[1:] = np.hypot(*np.diff(self._xy_flat, axis=0).T)
        self._step_m = step

    @property
    def n_cached_trees(self) -> int:
        """Number of shortest-path trees now cached."""
        return len(self._trees)

    # ----------------------------------------------------------------- places

    def node_for(self, place: LonLat | NodeRef | int) -> int:
        """Return the road node for a place.

        Parameters
        ----------
        place
            A ``LonLat`` (snapped to the nearest node), a ``NodeRef`` or a node id.

        Returns
        -------
        int
            A node id of the map.

        Raises
        ------
        RouteError
            The point is more than ``max_snap_m`` from every node, or the node is not in the map.
        """
        if isinstance(place, (int, np.integer)) and not isinstance(place, bool):
            return self._check_node(int(place))
        node = getattr(place, "node", None)
        if node is not None:
            return self._check_node(int(node))
        lon = getattr(place, "lon", None)
        lat = getattr(place, "lat", None)
        if lon is None or lat is None:
            msg = f"cannot route to {place!r}: expected LonLat, NodeRef or a node id"
            raise RouteError(msg)
        x, y = self.roadmap.to_xy(float(lon), float(lat))
        found, dist = self.roadmap.nearest_node(x, y)
        if not dist <= self.max_snap_m:
            b = self.roadmap.bounds_lonlat
            msg = (
                f"point (lon {lon}, lat {lat}) is off the map {self.roadmap.name!r}: nearest road node is "
                f"{dist:.0f} m away (max_snap_m={self.max_snap_m:g}); the map covers lon {b[0]:.4f}..{b[2]:.4f}, "
                f"lat {b[1]:.4f}..{b[3]:.4f}"
            )
            raise RouteError(msg)
        return found

    def _check_node(self, node: int) -> int:
        if not self.roadmap.has_node(node):
            msg = (
                f"node {node} is not in the road graph of {self.roadmap.name!r} "
                "(largest strongly connected component of its drivable roads)"
            )
            raise RouteError(msg)
        return node

    # ----------------------------------------------------------------- planning

    def route(
        self,
        origin: LonLat | NodeRef | int,
        destination: LonLat | NodeRef | int,
        *,
        via: Sequence[LonLat | NodeRef | int] = (),
    ) -> Route:
        """Plan the fastest route from ``origin`` through each ``via`` point in order to ``destination``.

        Parameters
        ----------
        origin, destination
            Places (see :meth:`node_for`).
        via
            Places the route must pass, in order.

        Returns
        -------
        Route
            The route.

        Raises
        ------
        RouteError
            A place is off the map, a leg is unreachable, or the route would be empty.
        """
        stops = [self.node_for(origin), *(self.node_for(p) for p in via), self.node_for(destination)]
        row_of = self.roadmap.node_index
        stop_rows = [row_of(node) for node in stops]
        legs = [np.array([stop_rows[0]], dtype=np.int64)]
        for a, b in itertools.pairwise(stop_rows):
            if a != b:
                legs.append(self._path_rows(a, b)[1:])
        rows = legs[0] if len(legs) == 1 else np.concatenate(legs)
        if len(rows) < 2:
            msg = f"origin and destination are the same node ({stops[0]}); a route needs two different places"
            raise RouteError(msg)
        return self._route_from_rows(rows)

    def route_nodes(self, origin: int, destination: int) -> tuple[int, ...]:
        """Return the node ids of the fastest path between two nodes (both ends included).

        Uses the cached shortest-path tree of ``origin`` (computed on first use).

        Raises
        ------
        RouteError
            A node is not in the map, or ``destination`` cannot be reached from ``origin``.
        """
        src = self.roadmap.node_index(self._check_node(int(origin)))
        dst = self.roadmap.node_index(self._check_node(int(destination)))
        return tuple(self._node_ids[self._path_rows(src, dst)].tolist())

    def route_from_nodes(self, nodes: Sequence[int] | np.ndarray) -> Route:
        """Build a :class:`Route` along consecutive nodes (the fastest of parallel edges each step).

        Raises
        ------
        RouteError
            Fewer than two nodes, a node not in the map, or two consecutive nodes not joined by an edge.
        """
        node_arr = np.asarray(nodes, dtype=np.int64)
        if node_arr.ndim != 1 or len(node_arr) < 2:
            msg = "a route needs at least two nodes"
            raise RouteError(msg)
        rows = np.fromiter(
            (self.roadmap.node_index(self._check_node(int(n))) for n in node_arr), dtype=np.int64, count=len(node_arr)
        )
        return self._route_from_rows(rows)

    def _path_rows(self, src: int, dst: int) -> np.ndarray:
        """Node rows of the fastest path from row ``src`` to row ``dst`` (both included)."""
        if src == dst:
            return np.array([src], dtype=np.int64)
        rows = _walk_tree(self._tree(src), src, dst)
        if len(rows) == 0:
            ids = self._node_ids
            msg = f"no route from node {ids[src]} to node {ids[dst]}: not reachable on the map's drivable roads"
            raise RouteError(msg)
        return rows

    def _route_from_rows(self, rows: np.ndarray) -> Route:
        edges, idx, cum, edge_end, bad = _route_arrays(rows, self._pair_key, self._pair_edge, self._n,
                                                       self._xy_offsets, self._step_m)  # fmt: skip
        if bad >= 0:
            ids = self._node_ids
            msg = f"no edge from node {ids[rows[bad]]} to node {ids[rows[bad + 1]]}"
            raise RouteError(msg)
        xy = self._xy_flat[idx]
        edge_start = np.empty_like(edge_end)
        edge_start[0] = 0.0
        edge_start[1:] = edge_end[:-1]
        for array in (edges, xy, cum, edge_start, edge_end):
            array.setflags(write=False)
        return Route(
            nodes=tuple(self._node_ids[rows].tolist()),
            edges=edges,
            xy=xy,
            cum_m=cum,
            edge_start_m=edge_start,
            edge_end_m=edge_end,
            length_m=float(cum[-1]),
        )

    def _tree(self, src: int) -> np.ndarray:
        tree = self._trees.get(src)
        if tree is not None:
            self._trees.move_to_end(src)
            self.cache_hits += 1
            return tree
        self.cache_misses += 1
        _, pred = dijkstra(self._graph, directed=True, indices=src, return_predecessors=True)
        tree = pred.astype(np.int32)  # -9999 marks unreachable / the source itself
        tree[tree < 0] = -1
        self._trees[src] = tree
        if len(self._trees) > self._cache_size:
            self._trees.popitem(last=False)
        return tree

    def travel_time_s(self, route: Route) -> float:
        """Return the free-flow travel time of a route (sum of its edges' ``travel_time_s``)."""
        return float(self.roadmap.travel_time_s[route.edges].sum())


@njit(cache=True, nogil=True)
def _point_at(cum: np.ndarray, xy: np.ndarray, s: float) -> tuple[float, float]:
    """:meth:`Route.position` of one distance ``s``: ``np.interp`` of ``xy`` over ``cum`` at ``s`` clipped to the route."""
    if math.isnan(s):
        return math.nan, math.nan
    n = cum.shape[0]
    s = min(max(s, 0.0), cum[n - 1])
    lo, hi = 0, n  # j: the last knot at or before s
    while lo < hi:
        mid = (lo + hi) >> 1
        if cum[mid] <= s:
            lo = mid + 1
        else:
            hi = mid
    j = lo - 1
    if j < 0:
        return xy[0, 0], xy[0, 1]
    if j >= n - 1 or cum[j] == s:
        return xy[j, 0], xy[j, 1]
    out = np.empty(2)
    for c in range(2):
        slope = (xy[j + 1, c] - xy[j, c]) / (cum[j + 1] - cum[j])
        v = slope * (s - cum[j]) + xy[j, c]
        if math.isnan(v):  # as np.interp: from the other end, then a flat segment's value
            v = slope * (s - cum[j + 1]) + xy[j + 1, c]
            if math.isnan(v) and xy[j, c] == xy[j + 1, c]:
                v = xy[j, c]
        out[c] = v
    return out[0], out[1]


@njit(cache=True, nogil=True)
def _walk_tree(pred: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Rows from ``src`` to ``dst`` along the predecessor tree ``pred`` of ``src`` (empty: not reachable)."""
    n = 1
    cur = dst
    while cur != src:
        cur = pred[cur]
        if cur < 0:
            return np.empty(0, dtype=np.int64)
        n += 1
    out = np.empty(n, dtype=np.int64)
    cur = dst
    for k in range(n - 1, -1, -1):
        out[k] = cur
        if k > 0:
            cur = pred[cur]
    return out


@njit(cache=True, nogil=True)
def _route_arrays(rows, pair_key, pair_edge, n_nodes, xy_offsets, step_m):
    """Edges along node ``rows``; the route's point indices, cumulative and edge-end distances.

    The points: all of the first edge's polyline, then each next edge's but its first point (the
    joint); distances are the running sum of the polyline steps. ``bad``: the first ``k`` with no
    edge from ``rows[k]`` to ``rows[k + 1]`` (-1: none).
    """
    m = rows.shape[0] - 1
    edges = np.empty(m, dtype=np.int64)
    total = 1
    for k in range(m):
        key = rows[k] * n_nodes + rows[k + 1]
        pos = np.searchsorted(pair_key, key)
        if pos >= pair_key.shape[0] or pair_key[pos] != key:
            return edges[:0], edges[:0], np.empty(0), np.empty(0), k
        edges[k] = pair_edge[pos]
        total += xy_offsets[edges[k] + 1] - xy_offsets[edges[k]] - 1
    idx = np.empty(total, dtype=np.int64)
    cum = np.empty(total)
    edge_end = np.empty(m)
    idx[0] = xy_offsets[edges[0]]
    cum[0] = 0.0
    p = 1
    for k in range(m):
        for q in range(xy_offsets[edges[k]] + 1, xy_offsets[edges[k] + 1]):
            idx[p] = q
            cum[p] = cum[p - 1] + step_m[q]
            p += 1
        edge_end[k] = cum[p - 1]
    return edges, idx, cum, edge_end, -1


# --------------------------------------------------------------------------- node sampling


def nodes_in_polygon(roadmap: RoadMap, polygon_lonlat: Iterable[Sequence[float]]) -> np.ndarray:
    """Return the ids of the nodes inside a lon/lat polygon.

    Parameters
    ----------
    roadmap
        The map.
    polygon_lonlat
        ``[[lon, lat], ...]``, at least three points (closing point optional).

    Returns
    -------
    numpy.ndarray
        int64 node ids, in :attr:`RoadMap.node_ids` order.

    Raises
    ------
    RouteError
        No node lies inside the polygon.
    """
    points = [tuple(map(float, p)) for p in polygon_lonlat]
    polygon = shapely.Polygon(points)
    inside = shapely.contains_xy(polygon, roadmap.nodes_lonlat[:, 0], roadmap.nodes_lonlat[:, 1])
    if not inside.any():
        b = roadmap.bounds_lonlat
        msg = (
            f"no road node of {roadmap.name!r} inside the polygon {points}; the map covers lon "
            f"{b[0]:.4f}..{b[2]:.4f}, lat {b[1]:.4f}..{b[3]:.4f}"
        )
        raise RouteError(msg)
    return roadmap.node_ids[inside]


def candidate_nodes(roadmap: RoadMap, sampler: NodeSampler) -> np.ndarray:
    """Return the nodes a fleet's :class:`~ivsim.config.schema.NodeSampler` draws from.

    Parameters
    ----------
    roadmap
        The map.
    sampler
        ``kind`` ``any`` (every node), ``polygon`` (nodes inside ``polygon``) or ``nodes`` (the listed ids).

    Returns
    -------
    numpy.ndarray
        int64 node ids (draw from them with ``rng.choice``).

    Raises
    ------
    RouteError
        The polygon holds no node, or a listed node is not in the map.
    """
    if sampler.kind == "any":
        return roadmap.node_ids
    if sampler.kind == "polygon":
        return nodes_in_polygon(roadmap, sampler.polygon)
    listed = np.asarray(sampler.nodes, dtype=np.int64)
    missing = [int(n) for n in listed if not roadmap.has_node(int(n))]
    if missing:
        msg = (
            f"nodes {missing} are not in the road graph of {roadmap.name!r} "
            "(largest strongly connected component of its drivable roads)"
        )
        raise RouteError(msg)
    return listed
